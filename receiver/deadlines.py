"""Deadlines of one length for many waiters, kept by one timer instead of one timer each.

Every request has a deadline for its body and another for its acknowledgement, and almost every
request finishes long before either. A uvloop timer handle made and cancelled costs about 2 us,
more than most checks of a request; here adding and removing a deadline is a dict insert and
delete. All waiters of one ``Deadlines`` have the same delay, so the order they were added in is
the order they expire in: one timer, set for the oldest waiter still there, is enough.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

Waiter = TypeVar("Waiter")


class Deadlines(Generic[Waiter]):
    """Calls ``expire(waiter)`` for each waiter still registered ``delay`` seconds after ``add``.

    Used from one event loop at a time (the one running when a waiter is added).
    """

    def __init__(self, delay: float, expire: Callable[[Waiter], None]) -> None:
        self.delay = delay
        self._expire = expire
        self._waiting: dict[int, tuple[float, Waiter]] = {}
        self._next_token = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, waiter: Waiter) -> int:
        """Register ``waiter``; the token returned takes it off again (``discard``)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # A store or app used again from a new loop (tests, tools): its timers live there.
            self._loop, self._timer = loop, None
        due = loop.time() + self.delay
        token = self._next_token = self._next_token + 1
        self._waiting[token] = (due, waiter)
        if self._timer is None:
            self._timer = loop.call_at(due, self._tick)
        return token

    def discard(self, token: int) -> None:
        self._waiting.pop(token, None)

    def _tick(self) -> None:
        self._timer = None
        assert self._loop is not None
        now = self._loop.time()
        expired: list[int] = []
        # Insertion order is expiry order: the expired ones are the first ones.
        for token, (due, _) in self._waiting.items():
            if due > now:
                self._timer = self._loop.call_at(due, self._tick)
                break
            expired.append(token)
        for token in expired:
            _, waiter = self._waiting.pop(token)
            self._expire(waiter)
