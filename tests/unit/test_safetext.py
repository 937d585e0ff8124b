"""receiver.safetext as properties: whatever the text, what is shown has no raw control
character, line separator or bidirectional mark, and JSON lines stay one line and give the value
back."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from receiver.safetext import for_terminal, json_text, keeping_lines

UNSAFE = {chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]} | set(
    "\u061c\u200e\u200f\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
# Every text, lone surrogates included (what a stored value may hold), weighted toward the
# characters that matter here.
TEXT = st.text(
    st.one_of(
        st.characters(),
        st.sampled_from(sorted(UNSAFE)),
        st.sampled_from(["\\", "\ud800", "\udc80", "\udfff"]),
    ),
    max_size=60,
)


@given(TEXT)
def test_for_terminal_leaves_nothing_that_moves_the_cursor(text: str) -> None:
    shown = for_terminal(text)
    assert not any(char in UNSAFE or 0xD800 <= ord(char) <= 0xDFFF for char in shown)
    assert len(shown.splitlines()) <= 1
    shown.encode("utf-8")  # printable: no lone surrogate left


@given(TEXT)
def test_for_terminal_changes_only_what_it_must(text: str) -> None:
    if not any(char in UNSAFE or 0xD800 <= ord(char) <= 0xDFFF for char in text):
        assert for_terminal(text) == text


@given(TEXT)
def test_keeping_lines_keeps_only_line_feeds(text: str) -> None:
    shown = keeping_lines(text)
    assert {char for char in shown if char in UNSAFE} <= {"\n"}
    assert shown.count("\n") == text.count("\n")


@given(st.dictionaries(TEXT, st.one_of(TEXT, st.lists(TEXT, max_size=3)), max_size=4))
def test_json_text_is_one_line_that_gives_the_value_back(value: dict[str, object]) -> None:
    line = json_text(value)
    assert line.splitlines() == [line] or line == ""
    assert not any(char in UNSAFE for char in line)
    assert json.loads(line) == value
    line.encode("utf-8")


def test_readable_text_stays_readable() -> None:
    assert json_text({"nome": "Carga Horária"}) == '{"nome": "Carga Horária"}'
    assert for_terminal("ação \\ ok") == "ação \\ ok"
    assert for_terminal("a\x1b[2J\u2028b") == "a\\x1b[2J\\u2028b"
