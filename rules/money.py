"""Amounts of money as the engine holds them (integer minor units of the program's currency) and
as people read them: the one table of minor units (ISO 4217) and the one formatter."""

from __future__ import annotations

from decimal import Decimal

#: ISO 4217 currencies whose minor unit is not 1/100 (the exceptions are few and stable).
MINOR_DIGITS = {
    "JPY": 0,
    "KRW": 0,
    "ISK": 0,
    "CLP": 0,
    "VND": 0,
    "HUF": 2,
    "BHD": 3,
    "KWD": 3,
    "OMR": 3,
    "JOD": 3,
    "TND": 3,
    "LYD": 3,
    "IQD": 3,
}


def minor_digits(currency: str) -> int:
    """Decimal places of ``currency``'s minor unit: 2 for EUR, 0 for JPY, 3 for KWD."""
    return MINOR_DIGITS.get(currency.upper(), 2)


def minor_unit(currency: str) -> Decimal:
    """The minor unit as a fraction of the major one: Decimal("0.01") for EUR, 1 for JPY."""
    return Decimal(1).scaleb(-minor_digits(currency))


def format_money(amount: int, currency: str) -> str:
    """``amount`` minor units as people read them, exactly (no floating point): 123450 EUR ->
    "1,234.50 EUR", 1235 JPY -> "1,235 JPY", 1250 KWD -> "1.250 KWD"."""
    digits = minor_digits(currency)
    sign = "-" if amount < 0 else ""
    major, minor = divmod(abs(amount), 10**digits)
    fraction = f".{minor:0{digits}d}" if digits else ""
    return f"{sign}{major:,}{fraction} {currency}"
