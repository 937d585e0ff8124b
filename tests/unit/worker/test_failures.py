"""The record of a failed attempt: the traceback bounded, innermost frames kept."""

from __future__ import annotations

import pytest

from receiver.errors import Retry
from receiver.worker.failures import (
    TRACEBACK_CHARS,
    bounded_traceback,
    error_type,
    message,
)


def raised(depth: int, text: str = "Portal answered 503") -> BaseException:
    # Two functions calling each other: Python folds a run of identical frames into one line.
    def inner(level: int) -> None:
        if level == 0:
            raise ValueError(text)
        outer(level - 1)

    def outer(level: int) -> None:
        inner(level)

    try:
        inner(depth)
    except ValueError as error:
        return error
    raise AssertionError("nothing raised")


def test_a_short_traceback_is_kept_whole() -> None:
    text = bounded_traceback(raised(2))
    assert text.startswith("Traceback (most recent call last):\n")
    assert text.count("in inner") == 3 and text.count("in outer") == 2
    assert text.rstrip().endswith("ValueError: Portal answered 503")
    assert "left out" not in text


def test_a_deep_traceback_keeps_its_innermost_frames_within_the_limit() -> None:
    error = raised(400)
    whole = bounded_traceback(error, limit=10**9)
    text = bounded_traceback(error)
    assert len(whole) > 10 * TRACEBACK_CHARS
    assert len(text) <= TRACEBACK_CHARS
    assert text.startswith("Traceback (most recent call last):\n  ... ")
    assert "outer lines left out" in text
    assert text.rstrip().endswith("ValueError: Portal answered 503")
    # The innermost frame, where it raised, is the one kept.
    assert "raise ValueError(text)" in text
    assert whole.endswith(text.split("left out ...\n", 1)[1])


def test_the_causes_are_shown_and_the_last_error_is_the_one_kept_when_cut() -> None:
    try:
        try:
            raise KeyError("numero")
        except KeyError as missing:
            raise RuntimeError("no Duimp number in the event") from missing
    except RuntimeError as error:
        text = bounded_traceback(error)
        tight = bounded_traceback(error, limit=300)
    assert "KeyError: 'numero'" in text
    assert "direct cause" in text
    assert tight.rstrip().endswith("RuntimeError: no Duimp number in the event")
    assert len(tight) <= 300


def test_an_error_line_over_the_limit_is_cut_and_nul_is_escaped() -> None:
    text = bounded_traceback(raised(1, "x" * 10_000 + "\x00"), limit=500)
    assert len(text) <= 500
    assert text.startswith("ValueError: xxx")
    assert "\x00" not in bounded_traceback(raised(1, "a\x00b"))


@pytest.mark.parametrize(
    ("error", "kind"),
    [(ValueError("x"), "ValueError"), (Retry(after=3), "receiver.errors.Retry")],
)
def test_the_error_type_names_its_module_unless_builtin(error: BaseException, kind: str) -> None:
    assert error_type(error) == kind


def test_the_message_is_bounded_and_escaped() -> None:
    assert message(ValueError("a\x00" + "b" * 5000)).startswith("a\\x00b")
    assert len(message(ValueError("b" * 5000))) == 2000
