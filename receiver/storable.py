"""What the store can hold: one place that checks text before it is written, and makes it safe.

A row that one value makes unwritable fails its whole statement, and with it every other row of
the batch or the transaction it travels in. What every store we support refuses:

- a lone surrogate (``"\\ud800"``, which JSON's ``\\u`` escapes can spell): it has no UTF-8 form,
  so neither sqlite3 nor psycopg can send it (``UnicodeEncodeError``);
- NUL (``"\\x00"``): PostgreSQL text cannot hold it (psycopg raises ``DataError``); SQLite keeps
  it, but a value must mean the same on both stores;
- more characters than a ``varchar(n)`` column holds: PostgreSQL refuses the row
  (``StringDataRightTruncation``); SQLite keeps it, likewise.

``problem`` says why a value cannot be stored (the caller then sets the item aside with that
reason, or refuses it); ``safe`` makes it storable (for excerpts and messages, where an escaped or
shortened value is still useful). Both cost a length check and a scan for NUL on ASCII text, the
common case; only non-ASCII text is encoded to look for surrogates. Pure functions: no I/O.
"""

from __future__ import annotations

ELLIPSIS = "…"


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def problem(value: str, limit: int | None = None) -> str | None:
    """Why ``value`` cannot be written to a text column of ``limit`` characters; None if it can."""
    if limit is not None and len(value) > limit:
        return f"longer than {limit} characters ({len(value)})"
    if "\x00" in value:
        return "contains a NUL character"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as error:
            return f"contains a lone surrogate (U+{ord(value[error.start]):04X})"
    return None


def safe(value: str, limit: int | None = None) -> str:
    """``value`` with NUL and lone surrogates escaped (``\\x00``, ``\\ud800``) and, if it is still
    longer than ``limit`` characters, cut to ``limit`` with an ellipsis as its last character."""
    if (
        (limit is None or len(value) <= limit)
        and "\x00" not in value
        and (value.isascii() or _encodable(value))
    ):
        return value
    text = value.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    if limit is not None and len(text) > limit:
        text = text[: max(0, limit - 1)] + ELLIPSIS
    return text


def shown(value: str, limit: int = 60) -> str:
    """``value`` quoted for a message about it: escaped, and cut to ``limit`` characters."""
    return repr(safe(value, limit))


def require(value: str, limit: int | None, what: str) -> str:
    """``value`` itself if it can be stored; else ValueError naming ``what`` and the reason."""
    why = problem(value, limit)
    if why is not None:
        raise ValueError(f"{what} {shown(value)} cannot be stored: {why}")
    return value
