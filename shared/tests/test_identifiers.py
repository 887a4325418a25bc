"""NPI check digits (CMS: Luhn over 80840 + the first nine digits), in the one place every service uses."""

from __future__ import annotations

from dsi_shared.identifiers import is_npi, npi_check_digit, npi_problem
from hypothesis import given
from hypothesis import strategies as st


def test_known_npis() -> None:
    assert is_npi("1234567893") and is_npi("1003000126")  # the CMS example; a published NPI
    assert npi_problem("0000000000") == "check digit does not match"
    assert npi_problem("1234567890") == "check digit does not match"
    assert npi_problem("123456789") == npi_problem("12345678901") == npi_problem("123456789３") == "not 10 digits"


@given(st.from_regex(r"[0-9]{9}", fullmatch=True), st.integers(min_value=1, max_value=9))
def test_the_check_digit_is_the_only_one_that_passes(first_nine: str, shift: int) -> None:
    good = npi_check_digit(first_nine)
    assert is_npi(first_nine + good)
    assert not is_npi(first_nine + str((int(good) + shift) % 10))
