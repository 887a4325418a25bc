"""Identifiers accepted as input, checked in one place: NPIs (with their check digit), TINs, e-mail addresses and
the length of free identifiers. Use the annotated types in request and message models; problems name the kind of
error, never the value."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints

NPI_PREFIX = "80840"  # the NPI's issuer prefix (ISO 7812 card-issuer identifier for US health): part of the check
_TEN_DIGITS = re.compile(r"[0-9]{10}", re.ASCII)
_NINE_DIGITS = re.compile(r"[0-9]{9}", re.ASCII)
# RFC 5321/5322 addr-spec, the dot-atom form only (no quoted local parts, no IP literals, ASCII): strict enough to
# refuse what a typo or an injection produces, loose enough for every address a provider's office uses.
_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*", re.ASCII)
_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?", re.ASCII)
_TLD = re.compile(r"[A-Za-z]{2,63}|xn--[A-Za-z0-9-]{1,59}", re.ASCII)
MAX_EMAIL = 254
MAX_IDENTIFIER = 200  # document ids, facility ids, entity identifiers: none of the real ones comes close


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check over a string of ASCII digits, the last of which is the check digit."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def npi_check_digit(first_nine: str) -> str:
    """The tenth digit of the NPI starting with these nine (CMS: Luhn over `80840` + the nine digits)."""
    return next(d for d in "0123456789" if luhn_valid(NPI_PREFIX + first_nine + d))


def npi_problem(value: str) -> str | None:
    """Why `value` is not an NPI (PHI-free: the kind of problem, never the value), or None when it is one."""
    if not _TEN_DIGITS.fullmatch(value):
        return "not 10 digits"
    if not luhn_valid(NPI_PREFIX + value):
        return "check digit does not match"
    return None


def is_npi(value: str) -> bool:
    return npi_problem(value) is None


def _npi(value: str) -> str:
    if (problem := npi_problem(value)) is not None:
        raise ValueError(f"not an NPI: {problem}")
    return value


def _email(value: str) -> str:
    local, at, domain = value.rpartition("@")
    labels = domain.split(".")
    if not (at and 0 < len(local) <= 64 and _LOCAL.fullmatch(local) and len(domain) <= 253 and len(labels) >= 2
            and all(_LABEL.fullmatch(label) for label in labels) and _TLD.fullmatch(labels[-1])):
        raise ValueError("not an e-mail address")
    return value


# A National Provider Identifier: 10 ASCII digits whose last is the Luhn check digit over 80840 + the first nine.
Npi = Annotated[str, StringConstraints(min_length=10, max_length=10), AfterValidator(_npi)]
# A Taxpayer Identification Number (EIN): 9 ASCII digits.
Tin = Annotated[str, StringConstraints(pattern=r"^[0-9]{9}$")]
Email = Annotated[str, StringConstraints(min_length=3, max_length=MAX_EMAIL), AfterValidator(_email)]
# A free identifier (a document id, a facility, a participant reference): bounded, never empty.
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=MAX_IDENTIFIER)]
MAX_IDENTIFIERS = 20


def _identifiers(value: dict[str, str]) -> dict[str, str]:
    """A set of named identifiers (`{"npi": …, "oshpd": …}`): one named `npi` must be an NPI."""
    for name, identifier in value.items():
        if name.strip().casefold() == "npi" and (problem := npi_problem(identifier)) is not None:
            raise ValueError(f"{name}: not an NPI: {problem}")
    return value


# Named identifiers of an organization (`{"npi": "1234567893", "oshpd": "106440755"}`), each typed by its name.
Identifiers = Annotated[
    dict[Annotated[str, StringConstraints(min_length=1, max_length=50)], Identifier],
    Field(max_length=MAX_IDENTIFIERS),
    AfterValidator(_identifiers),
]
