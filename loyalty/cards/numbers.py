"""Printed card numbers: a program prefix, a serial, and a Luhn check digit.

The Luhn digit catches every single wrong digit and every swap of two neighbouring digits (except
09 <-> 90), so a mistyped number is refused before any database lookup.
"""

from __future__ import annotations

import re

from loyalty.cards.errors import InvalidCardNumber

__all__ = [
    "CARD_NUMBER_LENGTH",
    "InvalidCardNumber",
    "format_card_number",
    "luhn_check_digit",
    "luhn_valid",
    "make_card_number",
    "parse_card_number",
]

#: Digits of a printed card number, check digit included (the length of a payment card: familiar to
#: cashiers and to till keypads).
CARD_NUMBER_LENGTH = 16

_SEPARATORS = re.compile(r"[\s\-]")
# ASCII only: str.isdigit() also accepts "²" (int() refuses it) and "١٢٣" (a number that would never
# match the stored one).
_DIGITS = re.compile(r"[0-9]+")


def _is_digits(text: str) -> bool:
    return _DIGITS.fullmatch(text) is not None


def luhn_check_digit(payload: str) -> str:
    """The digit that makes ``payload + digit`` pass the Luhn check."""
    total = 0
    for i, ch in enumerate(reversed(payload)):
        d = int(ch)
        if i % 2 == 0:  # these positions are doubled once the check digit is appended
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def luhn_valid(number: str) -> bool:
    return _is_digits(number) and luhn_check_digit(number[:-1]) == number[-1]


def make_card_number(prefix: str, serial: int, length: int = CARD_NUMBER_LENGTH) -> str:
    """``prefix`` (digits), ``serial`` zero-padded to fill, then the check digit."""
    if not _is_digits(prefix):
        raise ValueError("card prefix must be digits")
    width = length - len(prefix) - 1
    if width < 1 or serial < 0 or serial >= 10**width:
        raise ValueError(f"serial {serial} does not fit a {length}-digit number with prefix {prefix}")
    payload = f"{prefix}{serial:0{width}d}"
    return payload + luhn_check_digit(payload)


def parse_card_number(text: str, length: int = CARD_NUMBER_LENGTH) -> str:
    """Normalise a typed number (spaces and dashes allowed) and verify it; raise InvalidCardNumber."""
    digits = _SEPARATORS.sub("", text)
    if not _is_digits(digits) or len(digits) != length:
        raise InvalidCardNumber(f"a card number has {length} digits")
    if not luhn_valid(digits):
        raise InvalidCardNumber("card number check digit does not match: please retype it")
    return digits


def format_card_number(number: str) -> str:
    """Groups of four, as printed: 6012 3400 0000 0017."""
    return " ".join(number[i : i + 4] for i in range(0, len(number), 4))
