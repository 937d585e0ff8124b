"""What the alert tests share: a clock the test moves, rules it scripts, sinks that record."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, ParamSpec

from receiver.alerts import Episode, Finding

P = ParamSpec("P")


def run_async(test: Callable[P, Coroutine[Any, Any, None]]) -> Callable[P, None]:
    """A test written as a coroutine, run in an event loop of its own (pytest sees the same
    fixtures through ``functools.wraps``)."""

    @functools.wraps(test)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        asyncio.run(test(*args, **kwargs))

    return wrapper


class Clock:
    """The evaluator's clock, moved by the test."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


class ScriptedRule:
    """A rule whose findings the test sets: a list of subjects (firing), [] (clear) or None
    (cannot tell)."""

    def __init__(self, name: str = "scripted") -> None:
        self.name = name
        self.subjects: list[str] | None = []

    async def check(self, now: datetime) -> list[Finding] | None:
        if self.subjects is None:
            return None
        return [Finding(self.name, f"{self.name} on {s or 'all'}", s) for s in self.subjects]


class RecordingSink:
    """Records (event, rule, subject, episode id); fails while ``failing`` is set."""

    def __init__(self, name: str = "recording") -> None:
        self.name = name
        self.sent: list[tuple[str, str, str]] = []
        self.failing = False

    async def send(self, episode: Episode, event: str) -> None:
        if self.failing:
            raise ConnectionError("the sink is down")
        self.sent.append((event, episode.rule, episode.subject))
