"""The evaluator on a real SQLite file with a clock the test moves: each alert fires once per
episode, resolves once, survives a restart and a second evaluator, and a failing sink or a store
that refuses writes never loses a message nor stops the evaluator."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from receiver import metrics
from receiver.alerts import Evaluation, Evaluator, LogSink, episodes
from receiver.store import Store
from tests.alerts_support import Clock, RecordingSink, ScriptedRule
from tests.conftest import migrated


def run(coroutine: Coroutine[Any, Any, Evaluation]) -> Evaluation:
    return asyncio.run(coroutine)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'receiver.db'}")
    migrated(store)
    yield store
    store.close()


def firing_gauge(rule: str) -> float | None:
    return metrics.REGISTRY.get_sample_value("receiver_alerts_firing", {"rule": rule})


def test_an_alert_fires_once_per_episode_and_says_when_it_resolved(store: Store) -> None:
    rule, sink, clock = ScriptedRule(), RecordingSink(), Clock()
    evaluator = Evaluator(store, [rule], [sink], clock=clock)
    rule.subjects = ["a"]
    first = run(evaluator.evaluate())
    assert [e.subject for e in first.fired] == ["a"]
    assert [e.subject for e in first.firing] == ["a"]
    assert firing_gauge("scripted") == 1
    for _ in range(3):
        clock.advance(minutes=1)
        again = run(evaluator.evaluate())
        assert again.fired == [] and len(again.firing) == 1
    assert sink.sent == [("fired", "scripted", "a")]
    rule.subjects = []
    resolved_at = clock.advance(minutes=1)
    done = run(evaluator.evaluate())
    assert [e.subject for e in done.resolved] == ["a"] and done.firing == []
    assert sink.sent == [("fired", "scripted", "a"), ("resolved", "scripted", "a")]
    assert firing_gauge("scripted") == 0
    [kept] = episodes(store)
    assert kept.resolved_at == resolved_at and kept.fired_at == first.fired[0].fired_at
    assert "resolved scripted [a]" in kept.describe()
    # A new episode after the resolution fires again, once.
    rule.subjects = ["a"]
    clock.advance(minutes=1)
    assert len((run(evaluator.evaluate())).fired) == 1
    assert [e.firing for e in episodes(store)] == [True, False]
    assert len(episodes(store, active_only=True)) == 1


def test_subjects_are_episodes_of_their_own(store: Store) -> None:
    rule, sink = ScriptedRule(), RecordingSink()
    evaluator = Evaluator(store, [rule], [sink], clock=Clock())
    rule.subjects = ["a", "b"]
    run(evaluator.evaluate())
    rule.subjects = ["b"]
    result = run(evaluator.evaluate())
    assert [e.subject for e in result.resolved] == ["a"]
    assert [e.subject for e in result.firing] == ["b"]
    assert sorted(sink.sent) == [
        ("fired", "scripted", "a"),
        ("fired", "scripted", "b"),
        ("resolved", "scripted", "a"),
    ]


def test_a_restarted_or_second_evaluator_does_not_fire_again(store: Store) -> None:
    rule, sink = ScriptedRule(), RecordingSink()
    rule.subjects = [""]
    run(Evaluator(store, [rule], [sink], clock=Clock()).evaluate())
    restarted, other = RecordingSink(), RecordingSink()
    assert (run(Evaluator(store, [rule], [restarted], clock=Clock()).evaluate())).fired == []
    assert (run(Evaluator(store, [rule], [other], clock=Clock()).evaluate())).fired == []
    assert restarted.sent == [] and other.sent == []
    # The resolution is told by the one evaluator that writes it.
    rule.subjects = []
    outcomes = [run(Evaluator(store, [rule], [s], clock=Clock()).evaluate()) for s in (sink, other)]
    assert [len(o.resolved) for o in outcomes] == [1, 0]
    assert sink.sent == [("fired", "scripted", ""), ("resolved", "scripted", "")]
    assert other.sent == []


def test_a_rule_that_cannot_tell_leaves_its_alerts_as_they_are(store: Store) -> None:
    rule, sink = ScriptedRule(), RecordingSink()
    evaluator = Evaluator(store, [rule], [sink], clock=Clock())
    rule.subjects = ["x"]
    run(evaluator.evaluate())
    rule.subjects = None
    result = run(evaluator.evaluate())
    assert result.unknown == ["scripted"]
    assert result.resolved == [] and len(result.firing) == 1


def test_a_failing_sink_is_tried_again_next_evaluation(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    rule, good, flaky = ScriptedRule(), RecordingSink("good"), RecordingSink("flaky")
    evaluator = Evaluator(store, [rule], [good, flaky], clock=Clock())
    flaky.failing = True
    rule.subjects = ["s"]
    with caplog.at_level(logging.ERROR, logger="receiver.alerts"):
        first = run(evaluator.evaluate())
    assert first.sink_failures == ["flaky: ConnectionError: the sink is down"]
    assert "not delivered to flaky" in caplog.text
    assert good.sent == [("fired", "scripted", "s")] and flaky.sent == []
    # Resolved while the sink is still down: its firing goes first, then the resolution.
    rule.subjects = []
    run(evaluator.evaluate())
    assert flaky.sent == []
    flaky.failing = False
    run(evaluator.evaluate())
    assert flaky.sent == [("fired", "scripted", "s"), ("resolved", "scripted", "s")]
    assert good.sent == [("fired", "scripted", "s"), ("resolved", "scripted", "s")]
    run(evaluator.evaluate())
    assert len(flaky.sent) == 2 and len(good.sent) == 2
    # A restarted evaluator owes nobody anything either.
    assert (run(Evaluator(store, [rule], [good, flaky], clock=Clock()).evaluate())).fired == []
    assert len(flaky.sent) == 2


def test_an_exception_in_a_rule_is_logged_and_the_others_go_on(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        name = "broken"

        async def check(self, now: object) -> None:
            raise OSError("disk on fire")

    rule, sink = ScriptedRule(), RecordingSink()
    rule.subjects = ["z"]
    evaluator = Evaluator(store, [Broken(), rule], [sink], clock=Clock())
    with caplog.at_level(logging.ERROR, logger="receiver.alerts"):
        result = run(evaluator.evaluate())
    assert result.unknown == ["broken"] and len(result.fired) == 1
    assert "alert rule broken failed: OSError: disk on fire" in caplog.text


def test_the_log_sink_says_fired_and_resolved(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    rule = ScriptedRule("quarantined")
    evaluator = Evaluator(store, [rule], [LogSink()], clock=Clock())
    rule.subjects = [""]
    with caplog.at_level(logging.INFO, logger="receiver.alerts"):
        run(evaluator.evaluate())
        run(evaluator.evaluate())
        rule.subjects = []
        run(evaluator.evaluate())
    lines = [r.getMessage() for r in caplog.records if r.name == "receiver.alerts"]
    assert len([line for line in lines if line.startswith("alert fired: FIRING quarantined")]) == 1
    assert len([line for line in lines if line.startswith("alert resolved: resolved")]) == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1


def test_the_alerts_of_a_rule_turned_off_resolve(store: Store) -> None:
    rule, sink = ScriptedRule("silence"), RecordingSink()
    rule.subjects = [""]
    run(Evaluator(store, [rule], [sink], clock=Clock()).evaluate())
    other = ScriptedRule("other")
    result = run(Evaluator(store, [other], [sink], clock=Clock()).evaluate())
    assert [e.rule for e in result.resolved] == ["silence"] and result.firing == []
    assert sink.sent == [("fired", "silence", ""), ("resolved", "silence", "")]
