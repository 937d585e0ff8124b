"""When to run a failed handler again: a pure policy object returning a decision."""

from __future__ import annotations

import random
from dataclasses import dataclass

from receiver.config import RetrySettings


@dataclass(frozen=True, slots=True)
class Decision:
    dead: bool
    delay: float  # seconds until the next attempt; meaningless when dead


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 8
    backoff_seconds: float = 10.0
    max_backoff_seconds: float = 3600.0
    jitter: float = 0.25

    @classmethod
    def from_settings(cls, settings: RetrySettings) -> RetryPolicy:
        return cls(
            settings.max_attempts,
            settings.backoff_seconds,
            settings.max_backoff_seconds,
            settings.jitter,
        )

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Wait after failed attempt number ``attempt`` (1-based): doubling, capped, jittered."""
        growth = 2.0 ** min(max(0, attempt - 1), 64)
        base = min(self.max_backoff_seconds, self.backoff_seconds * growth)
        spread: float = (rng or random).uniform(-self.jitter, self.jitter)
        return max(0.0, base * (1 + spread))

    def decide(
        self, attempt: int, requested_after: float | None = None, rng: random.Random | None = None
    ) -> Decision:
        """After failed attempt ``attempt``: dead once attempts are used up, else wait and retry.

        A handler's own ``Retry(after=...)`` sets the wait but still counts as an attempt, so a
        handler that always asks to retry ends in the dead letters like any other.
        """
        if attempt >= self.max_attempts:
            return Decision(dead=True, delay=0.0)
        if requested_after is not None:
            return Decision(dead=False, delay=max(0.0, requested_after))
        return Decision(dead=False, delay=self.backoff(attempt, rng))
