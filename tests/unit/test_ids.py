from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from unittest import mock

import pytest

from receiver.ids import id_floor, new_id

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def reference_ulid(millis: int, random: bytes) -> str:
    """The plain digit-by-digit encoding new_id must agree with."""
    value = millis << 80 | int.from_bytes(random, "big")
    digits = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        digits.append(CROCKFORD[digit])
    return "".join(reversed(digits))


def test_new_id_is_the_ulid_of_the_clock_and_random_bits() -> None:
    for random in (bytes(10), b"\xff" * 10, os.urandom(10), os.urandom(10)):
        for nanos in (0, 1_700_000_123_456_789_000, time.time_ns(), ((1 << 48) - 1) * 1_000_000):
            with (
                mock.patch(
                    "receiver.ids.RANDOM.getrandbits", return_value=int.from_bytes(random, "big")
                ),
                mock.patch("receiver.ids.time.time_ns", return_value=nanos),
            ):
                assert new_id() == reference_ulid(nanos // 1_000_000, random)


def test_new_ids_are_unique_and_sort_by_time() -> None:
    first = new_id()
    time.sleep(0.002)
    later = [new_id() for _ in range(1000)]
    assert len(set(later)) == 1000
    assert all(len(value) == 26 and set(value) <= set(CROCKFORD) for value in later)
    assert all(first < value for value in later)


def test_id_floor_bounds_the_ids_made_from_that_millisecond_on() -> None:
    when = datetime(2025, 3, 4, 5, 6, 7, 891_234, tzinfo=UTC)
    millis = (when - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    assert id_floor(when) == reference_ulid(millis, bytes(10))
    assert id_floor(when) <= reference_ulid(millis, bytes(10))
    assert id_floor(when) > reference_ulid(millis - 1, b"\xff" * 10)
    before = datetime.now(UTC)
    assert id_floor(before) <= new_id()
    assert id_floor(datetime(1960, 1, 1, tzinfo=UTC)) == "0" * 26


def test_id_floor_refuses_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="naive"):
        id_floor(datetime(2025, 1, 1))
