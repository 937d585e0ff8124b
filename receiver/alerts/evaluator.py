"""The evaluator: runs the rules, turns what they find into episodes (fired once, resolved once),
and tells the sinks.

The store holds the episodes (``alert_episodes``), so a restarted evaluator, or a second one,
does not fire an alert that is open already. The store is also what an alert may be about: when
it refuses writes, the evaluator keeps the episodes it could not write in memory, tells the sinks
anyway, and writes them at the first evaluation the store takes them. A sink that fails is logged
and tried again at the next evaluation (for ``history.DELIVERY_DAYS``); nothing a rule, the store
or a sink raises stops the evaluator.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError

from receiver import metrics
from receiver.alerts import history
from receiver.alerts.model import Episode, Finding, Rule, Sink
from receiver.alerts.sinks import FIRED, RESOLVED
from receiver.errors import ReceiverError
from receiver.store import Store, utcnow

log = logging.getLogger("receiver.alerts")

Key = tuple[str, str]


def _token(episode: Episode) -> tuple[str, int]:
    """Who an episode is: its row, or (not written yet) the object itself."""
    return ("row", episode.id) if episode.id is not None else ("memory", id(episode))


@dataclass
class Evaluation:
    """One evaluation: the alerts firing after it, what fired and resolved in it, the rules that
    could not tell (their episodes left as they were), and sink failures."""

    firing: list[Episode] = field(default_factory=list)
    fired: list[Episode] = field(default_factory=list)
    resolved: list[Episode] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    sink_failures: list[str] = field(default_factory=list)


class Evaluator:
    def __init__(
        self,
        store: Store,
        rules: Sequence[Rule],
        sinks: Sequence[Sink],
        *,
        clock: Callable[[], datetime] = utcnow,
        write_timeout_seconds: float = history.WRITE_TIMEOUT_SECONDS,
    ) -> None:
        self._store = store
        self._write_timeout = write_timeout_seconds
        self._rules = list(rules)
        self._sinks = list(sinks)
        self._clock = clock
        # Episodes whose latest state the store has not taken yet (open or resolved).
        self._unwritten: dict[tuple[str, int], Episode] = {}
        # Of those, the ones whose resolution the store has not taken yet.
        self._resolving: set[int] = set()
        for rule in self._rules:
            metrics.ALERTS_FIRING.labels(rule.name).set(0)

    @property
    def sinks(self) -> list[Sink]:
        return list(self._sinks)

    @property
    def rule_names(self) -> list[str]:
        return [rule.name for rule in self._rules]

    async def evaluate(self) -> Evaluation:
        now = self._clock()
        result = Evaluation()
        found: dict[str, list[Finding] | None] = {}
        for rule in self._rules:
            try:
                found[rule.name] = await rule.check(now)
            except (ReceiverError, SQLAlchemyError, OSError) as error:
                log.error("alert rule %s failed: %s: %s", rule.name, type(error).__name__, error)
                found[rule.name] = None
        result.unknown = [name for name, findings in found.items() if findings is None]
        state = await self._open_state()
        # A rule turned off in receiver.yaml: its open alerts resolve rather than stay for ever.
        for name in sorted({episode.rule for episode in state.values()} - set(found)):
            found[name] = []
        for name, findings in found.items():
            if findings is not None:
                self._apply(name, findings, state, now, result)
        await self._write(result)
        await self._deliver(now, result)
        result.firing = sorted(
            (e for e in (await self._open_state()).values() if e.firing),
            key=lambda e: (e.fired_at, e.rule, e.subject),
        )
        for name in self.rule_names:
            metrics.ALERTS_FIRING.labels(name).set(
                sum(1 for episode in result.firing if episode.rule == name)
            )
        return result

    async def _open_state(self) -> dict[Key, Episode]:
        """Open episodes: the store's, overlaid with those it has not taken yet."""
        try:
            state = await asyncio.to_thread(history.open_episodes, self._store)
        except SQLAlchemyError as error:
            log.error("alert episodes cannot be read: %s", type(error).__name__)
            state = {}
        for episode in self._unwritten.values():
            if episode.firing:
                state[episode.key] = episode
            elif (known := state.get(episode.key)) is not None and known.id == episode.id:
                del state[episode.key]
        return state

    def _apply(
        self,
        rule: str,
        findings: list[Finding],
        state: dict[Key, Episode],
        now: datetime,
        result: Evaluation,
    ) -> None:
        keys = set()
        for finding in findings:
            keys.add(finding.key)
            episode = state.get(finding.key)
            if episode is None:
                episode = Episode(
                    rule=rule,
                    subject=finding.subject,
                    summary=finding.summary,
                    fired_at=now,
                    seen_at=now,
                )
                state[finding.key] = episode
                result.fired.append(episode)
            else:
                episode.summary, episode.seen_at = finding.summary, now
            self._unwritten[_token(episode)] = episode
        for key, episode in list(state.items()):
            if episode.rule == rule and key not in keys:
                episode.resolved_at = now
                result.resolved.append(episode)
                self._unwritten[_token(episode)] = episode
                self._resolving.add(id(episode))

    async def _write(self, result: Evaluation) -> None:
        for key, episode in list(self._unwritten.items()):
            try:
                kept = await asyncio.to_thread(self._write_one, episode)
            except SQLAlchemyError as error:
                log.error(
                    "alert %s could not be written (kept in memory, written when the store takes "
                    "writes): %s",
                    episode.rule,
                    type(error).__name__,
                )
                continue
            del self._unwritten[key]
            self._resolving.discard(id(episode))
            if not kept:  # another evaluator fired or resolved it: it tells the sinks
                for told in (result.fired, result.resolved):
                    if episode in told:
                        told.remove(episode)

    def _write_one(self, episode: Episode) -> bool:
        if episode.id is None:
            return history.insert(self._store, episode, self._write_timeout)
        return history.save(
            self._store,
            episode,
            resolving=id(episode) in self._resolving,
            timeout_seconds=self._write_timeout,
        )

    async def _deliver(self, now: datetime, result: Evaluation) -> None:
        names = [sink.name for sink in self._sinks]
        try:
            pending = await asyncio.to_thread(history.undelivered, self._store, now, names)
        except SQLAlchemyError:
            pending = []
        # The store's episodes, overlaid with those whose latest state it has not taken yet.
        told = {_token(episode): episode for episode in pending}
        told.update(self._unwritten)
        for episode in told.values():
            if await self._tell(episode, result):
                self._unwritten[_token(episode)] = episode
        await self._write(Evaluation())

    async def _tell(self, episode: Episode, result: Evaluation) -> bool:
        """Tell every sink what it has not been told of ``episode``; True when one was."""
        changed = False
        for sink in self._sinks:
            for event, told in ((FIRED, episode.fired_sent), (RESOLVED, episode.resolved_sent)):
                if sink.name in told or (event == RESOLVED and episode.firing):
                    continue
                if event == RESOLVED and sink.name not in episode.fired_sent:
                    break  # its firing first, at the next evaluation
                try:
                    await sink.send(episode, event)
                except Exception as error:  # a sink never stops the evaluator
                    problem = f"{sink.name}: {type(error).__name__}: {error}"
                    log.error("alert %s %s not delivered to %s", episode.rule, event, problem)
                    result.sink_failures.append(problem)
                    break
                told.add(sink.name)
                changed = True
        return changed


async def evaluate_periodically(
    evaluator: Evaluator, every_seconds: float, stop: asyncio.Event, first_after: float = 0.0
) -> None:
    """``evaluate`` every ``every_seconds`` until ``stop`` is set; never raises."""
    wait = first_after
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=wait)
            return
        wait = every_seconds
        try:
            await evaluator.evaluate()
        except Exception:  # the next evaluation tries again
            log.exception("alert evaluation failed")
