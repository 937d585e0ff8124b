"""Time-ordered identifiers made by the process, so a batch insert needs no RETURNING round trip."""

from __future__ import annotations

import os
import random
import time
from datetime import UTC, datetime, timedelta

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Two Crockford digits (10 bits) per lookup: 13 lookups for the 130 bits of 26 digits. Half the
# cost of a digit-by-digit divmod loop, and new_id runs for every request.
_PAIRS = tuple(high + low for high in _CROCKFORD for low in _CROCKFORD)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


def _encode(value: int) -> str:
    """The 26 Crockford base-32 digits of a 128-bit value (the two top bits of 130 are zero)."""
    pairs = _PAIRS
    return (
        pairs[value >> 120]
        + pairs[value >> 110 & 1023]
        + pairs[value >> 100 & 1023]
        + pairs[value >> 90 & 1023]
        + pairs[value >> 80 & 1023]
        + pairs[value >> 70 & 1023]
        + pairs[value >> 60 & 1023]
        + pairs[value >> 50 & 1023]
        + pairs[value >> 40 & 1023]
        + pairs[value >> 30 & 1023]
        + pairs[value >> 20 & 1023]
        + pairs[value >> 10 & 1023]
        + pairs[value & 1023]
    )


# The random part only has to keep ids apart, not to be unguessable (an id grants nothing): a
# generator seeded from the OS, instead of a getrandom system call per id, which the writer paid
# for every row. Seeded again in a forked child, so two processes never share a sequence.
RANDOM = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: RANDOM.seed(os.urandom(32)))


def new_id() -> str:
    """A 26-character ULID: 48 bits of milliseconds then 80 random bits, sortable by time."""
    return _encode((time.time_ns() // 1_000_000) << 80 | RANDOM.getrandbits(80))


def id_floor(when: datetime) -> str:
    """The smallest id ``new_id`` can give at ``when`` (aware) or later: a lower bound for ranges."""
    if when.tzinfo is None:
        raise ValueError("naive datetime given to id_floor")
    millis = max(0, (when - _EPOCH) // _MILLISECOND)
    return _encode(min(millis, (1 << 48) - 1) << 80)


def id_time(note_id: str) -> datetime:
    """When ``new_id`` made this id (to the millisecond): its first 10 digits."""
    millis = 0
    for digit in note_id[:10].upper():
        millis = millis * 32 + _CROCKFORD.index(digit)
    return _EPOCH + millis * _MILLISECOND
