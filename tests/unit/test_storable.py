"""What the store can hold: the checks and safe forms that every writer of user data goes through."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from receiver import storable

# Every code point, lone surrogates and NUL included.
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=200)
LIMITS = st.none() | st.integers(min_value=1, max_value=150)


@pytest.mark.parametrize(
    ("value", "limit", "reason"),
    [
        ("a" * 121, 120, "longer than 120 characters (121)"),
        ("duimp\x00registro", 120, "contains a NUL character"),
        ("evento \ud800", 120, "contains a lone surrogate (U+D800)"),
        ("\udfff", None, "contains a lone surrogate (U+DFFF)"),
    ],
)
def test_what_no_store_can_hold_is_named(value: str, limit: int | None, reason: str) -> None:
    assert storable.problem(value, limit) == reason
    with pytest.raises(ValueError, match=re.escape("cannot be stored: " + reason)):
        storable.require(value, limit, "event")


@pytest.mark.parametrize("value", ["", "a" * 120, "duimp.registro", "ação 😀", "\u2028\x1b[2J"])
def test_what_every_store_holds_passes_unchanged(value: str) -> None:
    assert storable.problem(value, 120) is None
    assert storable.safe(value, 120) is value
    assert storable.require(value, 120, "event") is value


def test_safe_forms_escape_and_cut() -> None:
    assert storable.safe("a\x00b") == "a\\x00b"
    assert storable.safe("x\ud800y") == "x\\ud800y"
    assert storable.safe("abcdef", 4) == "abc…"
    assert storable.safe("\x00" * 10, 5) == "\\x00…"


@given(ANY_TEXT, LIMITS)
def test_the_safe_form_of_anything_can_be_stored(value: str, limit: int | None) -> None:
    made = storable.safe(value, limit)
    assert storable.problem(made, limit) is None
    made.encode("utf-8")  # never raises
    if storable.problem(value, limit) is None:
        assert made == value  # nothing is changed that did not need it


@given(ANY_TEXT, LIMITS)
def test_problem_is_none_exactly_when_the_value_is_storable(value: str, limit: int | None) -> None:
    try:
        value.encode("utf-8")
        encodable = True
    except UnicodeEncodeError:
        encodable = False
    fits = limit is None or len(value) <= limit
    assert (storable.problem(value, limit) is None) == (encodable and fits and "\x00" not in value)
