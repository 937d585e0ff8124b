"""Text from senders made safe to show: in a terminal, in a log line, in a JSON line.

A stored event, header or body is the sender's text. Printed raw, C0 and C1 control characters
drive the terminal (ESC ] 0 ; ... BEL retitles it, CSI 2 J clears it, a carriage return rewrites
the row), a line break forges a row or a log line, and ``str.splitlines()`` also breaks lines at
U+0085, U+2028 and U+2029 (and at \\x0b, \\x0c, \\x1c-\\x1e), so one JSON object per line is
not one line any more for consumers that split that way. Bidirectional overrides reorder what a
reader sees. Each of these is shown as a visible escape instead.
"""

from __future__ import annotations

import json
import re
from typing import Any

# C0 and DEL and C1 (0x80-0x9f, U+0085 among them), the Unicode line and paragraph separators, the
# bidirectional marks and overrides, and lone surrogates (no UTF-8 form: printing one fails).
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]"
)
# In JSON text, C0 is escaped already by the encoder; what is left, escaped the JSON way.
_UNSAFE_IN_JSON = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")
# A traceback keeps its line breaks; anything else that moves the cursor is escaped.
_UNSAFE_BUT_NEWLINE = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]"
)


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def for_terminal(text: str) -> str:
    """``text`` with every character that could move the cursor, break the line or drive the
    terminal written as a visible ``\\xNN`` or ``\\uNNNN`` (a backslash itself is left alone)."""
    return _UNSAFE.sub(_visible, text)


def keeping_lines(text: str) -> str:
    """``for_terminal``, except that line feeds are kept (a traceback's own lines)."""
    return _UNSAFE_BUT_NEWLINE.sub(_visible, text)


def json_text(value: Any, indent: int | None = None) -> str:
    """``value`` as JSON with non-ASCII text kept readable, but every control character, line
    separator, bidirectional mark and lone surrogate escaped, so that without ``indent`` the
    result is exactly one line by any reckoning (``str.splitlines()`` included)."""
    text = json.dumps(value, ensure_ascii=False, indent=indent)
    return _UNSAFE_IN_JSON.sub(_json_escape, text)


def json_dumps(value: Any, **options: Any) -> str:
    """``json.dumps`` (with its ``options``, as a logging formatter passes them), non-ASCII text
    kept readable and everything ``json_text`` escapes escaped: one line by any reckoning."""
    options["ensure_ascii"] = False
    return _UNSAFE_IN_JSON.sub(_json_escape, json.dumps(value, **options))
