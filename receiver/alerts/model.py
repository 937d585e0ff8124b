"""What the alerts are made of: a rule's ``Finding`` (its condition holds now, about a subject),
an ``Episode`` (a finding from the evaluation that first saw it to the one that saw it gone), and
the ``PortalFacts`` the Portal rules read (the Portal watch's last report)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Finding:
    """A rule's condition holds: ``subject`` says about what ("" for the whole receiver)."""

    rule: str
    summary: str
    subject: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.rule, self.subject)


@dataclass(slots=True)
class Episode:
    """One alert from the evaluation that found its condition to the one that found it gone.

    ``id`` is None while it is not in the store yet (the store refused the write: it is kept in
    the evaluator's memory and written when the store takes writes again). ``fired_sent`` and
    ``resolved_sent`` name the sinks already told."""

    rule: str
    subject: str
    summary: str
    fired_at: datetime
    seen_at: datetime
    resolved_at: datetime | None = None
    id: int | None = None
    fired_sent: set[str] = field(default_factory=set)
    resolved_sent: set[str] = field(default_factory=set)

    @property
    def key(self) -> tuple[str, str]:
        return (self.rule, self.subject)

    @property
    def firing(self) -> bool:
        return self.resolved_at is None

    def describe(self) -> str:
        """One line for people: the rule, its subject and summary, and since when."""
        about = f" [{self.subject}]" if self.subject else ""
        since = self.fired_at.strftime("%Y-%m-%d %H:%M:%S UTC")
        if self.resolved_at is None:
            return f"FIRING {self.rule}{about}: {self.summary} (since {since})"
        until = self.resolved_at.strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"resolved {self.rule}{about}: {self.summary} ({since} to {until})"


@dataclass(frozen=True, slots=True)
class PortalFacts:
    """What the Portal watch last found (``receiver.runtime.watch.WatchReport``), as the Portal
    rules read it: subscriptions of receiver.yaml not active (evento, endpoint, why), failure
    streaks in days by evento, and failure records whose content the store lacks, by date."""

    checked_at: datetime
    not_active: tuple[tuple[str, str, str], ...] = ()
    streaks: Mapping[str, int] = field(default_factory=dict)
    unstored: Mapping[str, int] = field(default_factory=dict)


# The Portal rules' source: the latest facts, or None when there are none fresh enough to judge
# (the Portal could not be asked): their alerts then stay as they are.
PortalFactsSource = Callable[[], Awaitable[PortalFacts | None]]


class Rule(Protocol):
    """One alert rule: ``check`` returns the findings now (an empty list: all clear), or None
    when it cannot tell (outside its hours, the Portal not reachable): its episodes stay as they
    are until it can."""

    name: str

    async def check(self, now: datetime) -> list[Finding] | None: ...


class Sink(Protocol):
    """Where alerts go. ``send`` raises on failure; the evaluator logs it and tries again at the
    next evaluation."""

    name: str

    async def send(self, episode: Episode, event: str) -> None:
        """``event`` is "fired" or "resolved"."""
        ...
