"""Printed card numbers: a Luhn check digit refuses mistyped numbers before any lookup."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loyalty.cards.numbers import (
    CARD_NUMBER_LENGTH,
    InvalidCardNumber,
    format_card_number,
    luhn_check_digit,
    luhn_valid,
    make_card_number,
    parse_card_number,
)

serials = st.integers(min_value=0, max_value=10**11 - 1)


def test_known_luhn_vector() -> None:
    """The textbook number 7992739871 gets check digit 3, and 79927398713 passes the check."""
    assert luhn_check_digit("7992739871") == "3"
    assert luhn_valid("79927398713")
    assert not luhn_valid("79927398710")


@given(serials)
def test_made_numbers_parse_back(serial: int) -> None:
    """A made number has 16 digits and its prefix, and parses back typed plain, with spaces or with dashes."""
    number = make_card_number("6012", serial)
    assert len(number) == CARD_NUMBER_LENGTH and number.startswith("6012")
    assert parse_card_number(number) == number
    assert parse_card_number(format_card_number(number)) == number
    assert parse_card_number("-".join(format_card_number(number).split())) == number


@given(serials)
def test_every_single_digit_error_is_rejected(serial: int) -> None:
    """Changing any one digit, the check digit included, to any other digit makes the number invalid."""
    number = make_card_number("6012", serial)
    for i, original in enumerate(number):
        for digit in "0123456789":
            if digit != original:
                with pytest.raises(InvalidCardNumber):
                    parse_card_number(number[:i] + digit + number[i + 1 :])


def _swap(number: str, i: int) -> str:
    return number[:i] + number[i + 1] + number[i] + number[i + 2 :]


@given(serials)
def test_adjacent_transpositions_are_rejected_except_09(serial: int) -> None:
    """Swapping two different neighbouring digits is caught exactly when they are not 0 and 9."""
    number = make_card_number("6012", serial)
    for i in range(len(number) - 1):
        a, b = number[i], number[i + 1]
        if a == b:
            continue
        assert luhn_valid(_swap(number, i)) == ({a, b} == {"0", "9"})


def test_the_09_transposition_is_the_known_blind_spot() -> None:
    """A number holding 09 still passes after that pair is swapped to 90 (the Luhn scheme's one gap)."""
    number = make_card_number("6012", 9)  # 6012 0000 0000 009x
    i = number.index("09")
    assert luhn_valid(number) and luhn_valid(_swap(number, i))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "6012 0000 0000 003",  # 15 digits
        "6012 0000 0000 00030",  # 17 digits
        "6012 0000 0000 000x",
        "６０１２０００００００００００３",  # full-width digits: isdigit() says yes
        "²" * 16,  # isdigit() says yes, int() says no
        "٦٠١٢٠٠٠٠٠٠٠٠٠٠٠٣",  # Arabic-Indic digits
    ],
)
def test_malformed_numbers_are_rejected(text: str) -> None:
    """Wrong lengths, letters and non-ASCII digits are refused with InvalidCardNumber."""
    with pytest.raises(InvalidCardNumber):
        parse_card_number(text)


@given(st.text(max_size=40))
def test_arbitrary_text_raises_only_invalid_card_number(text: str) -> None:
    """Whatever is typed, parsing returns 16 ASCII digits or raises InvalidCardNumber."""
    try:
        number = parse_card_number(text)
    except InvalidCardNumber:
        return
    assert len(number) == CARD_NUMBER_LENGTH and number.isascii() and luhn_valid(number)


def test_format_groups_by_four() -> None:
    """A printed number reads in groups of four digits."""
    assert format_card_number("6012340000000017") == "6012 3400 0000 0017"


def test_make_refuses_what_does_not_fit() -> None:
    """A non-digit prefix, a negative serial or a serial too long for the number is a ValueError."""
    for prefix, serial in [("60a2", 1), ("", 1), ("6012", -1), ("6012", 10**11)]:
        with pytest.raises(ValueError):
            make_card_number(prefix, serial)
