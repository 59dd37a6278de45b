"""ISO 4217 codes and the exponent of their minor unit (amounts are integer minor units)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agg_domain.currency import CURRENCY_EXPONENTS, is_currency, minor_unit_exponent

# (code, decimal places of its minor unit): each exponent the table uses, with common codes
KNOWN: list[tuple[str, int]] = [
    ("EUR", 2),
    ("USD", 2),
    ("GBP", 2),
    ("CHF", 2),
    ("JPY", 0),
    ("KRW", 0),
    ("CLP", 0),
    ("ISK", 0),
    ("KWD", 3),
    ("BHD", 3),
    ("JOD", 3),
    ("TND", 3),
]

REFUSED: list[str] = [
    "eur",  # lower case
    "Eur",
    "jpy",
    "XYZ",  # never assigned
    "XXX",  # ISO's "no currency"
    "XTS",  # ISO's code for testing
    "XAU",  # gold: a fund, not a currency with a minor unit
    "HRK",  # withdrawn (Croatia adopted the euro)
    "EURO",
    "EU",
    "",
    " EUR",
    "EUR ",
    "EUR\n",
    "€",
]


@pytest.mark.parametrize(("code", "exponent"), KNOWN)
def test_known_code_and_its_exponent(code: str, exponent: int) -> None:
    assert is_currency(code)
    assert minor_unit_exponent(code) == exponent
    assert CURRENCY_EXPONENTS[code] == exponent


@pytest.mark.parametrize("code", REFUSED)
def test_lower_case_unknown_or_malformed_code_is_refused(code: str) -> None:
    assert not is_currency(code)
    with pytest.raises(KeyError):
        minor_unit_exponent(code)


def test_table_holds_only_well_formed_codes_and_exponents() -> None:
    assert len(CURRENCY_EXPONENTS) > 150
    for code, exponent in CURRENCY_EXPONENTS.items():
        assert re.fullmatch(r"[A-Z]{3}", code), code
        assert exponent in (0, 2, 3), (code, exponent)
        assert is_currency(code)


def test_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        CURRENCY_EXPONENTS["XYZ"] = 2  # type: ignore[index]


@given(st.text(max_size=5))
def test_is_currency_agrees_with_the_table(code: str) -> None:
    assert is_currency(code) == (code in CURRENCY_EXPONENTS)
