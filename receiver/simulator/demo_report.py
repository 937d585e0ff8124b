"""What ``receiver demo`` found, read from the receiver's store, and the summary it prints.

Kept apart from ``receiver.simulator.demo`` (which runs the system) so the verdict can be tested
on a store filled by hand.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from receiver.sources import dedup_key
from receiver.store import JOBS, NoteFilter, Store
from receiver.worker.results import load_result

# Their handler keeps the Duimp itself, by number and version; the others keep a situation.
REGISTRATION_EVENTS = (
    "dimp-registro-import",
    "dimp-retifica-import",
    "duimp.registro",
    "duimp.retificacao",
)
SITUATION_EVENT = "dimp-situacao-import"


@dataclass
class DemoReport:
    emitted: int = 0
    deliveries_to_receiver: int = 0
    received: int = 0
    stored: int = 0
    handled: int = 0
    not_handled: int = 0
    duimps_kept: int = 0
    duimps: int = 0
    situations_matching: int = 0
    failed_deliveries: int = 0
    failure_records: int = 0
    expected_failure_records: int = 0
    seconds: float = 0.0
    # From the start until every delivery to the receiver was stored and handled (the checks
    # that follow, fetching every Duimp again, are not in it); 0 if that never happened.
    handled_seconds: float = 0.0
    # event id -> [emitted, stored, handled]
    by_event: dict[str, list[int]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    # When each event was handed to the dispatcher (time.time()), by ``moment_key``; and, per
    # stored original, seconds from that to its commit, and from its commit to its last job's.
    emitted_at: dict[tuple[str, str, str, str], float] = field(default_factory=dict, repr=False)
    emit_to_stored: list[float] = field(default_factory=list, repr=False)
    stored_to_handled: list[float] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        return not self.problems


def reference(body: bytes) -> tuple[str, str] | None:
    """Duimp number and version of a notification body, in either shape (``identificacao`` or
    ``dados``)."""
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        payload = json.loads(body)
        for key in ("identificacao", "dados"):
            found = payload.get(key)
            if isinstance(found, dict) and found.get("numero"):
                return str(found["numero"]), str(found.get("versao"))
    return None


def moment_key(
    event: str, numero: str, versao: str, situacao: str | None
) -> tuple[str, str, str, str]:
    """What tells one demo event from another: a Duimp's event and version, and for a situation
    change its situation (the other events' bodies carry one the simulator fills in)."""
    return event, numero, versao, (situacao or "") if event == SITUATION_EVENT else ""


def _situation(body: bytes) -> str | None:
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        payload = json.loads(body)
        found = payload.get("situacaoDuimp") or payload.get("dados", {}).get("situacaoDuimp")
        return str(found) if found else None
    return None


def latencies(store: Store, report: DemoReport) -> None:
    """Fill ``report.emit_to_stored`` and ``stored_to_handled`` (seconds) from the store: a
    notification is stored at its commit (``received_at``) and handled at its last job's
    outcome (the jobs' ``updated_at``)."""
    with store.reading() as conn:
        handled_at: dict[str, datetime] = dict(
            conn.execute(
                select(JOBS.c.notification_id, func.max(JOBS.c.updated_at))
                .where(JOBS.c.status == "done")
                .group_by(JOBS.c.notification_id)
            ).all()
        )
    for row in store.notes(NoteFilter(source="pucomex")):
        if row["duplicate_of"] is not None:
            continue
        stored = row["received_at"].timestamp()
        found = reference(row["body"])
        if found is not None and row["event"]:
            key = moment_key(row["event"], found[0], found[1], _situation(row["body"]))
            emitted = report.emitted_at.get(key)
            if emitted is not None:
                report.emit_to_stored.append(stored - emitted)
        done = handled_at.get(row["id"])
        if done is not None:
            report.stored_to_handled.append(done.timestamp() - stored)


def receiver_counts(store: Store, report: DemoReport) -> tuple[int, int]:
    """(received, originals handled or given up on); fills the report's counts as it goes."""
    received = handled = not_handled = originals = 0
    stored_by: Counter[str] = Counter()
    handled_by: Counter[str] = Counter()
    for row in store.notes(NoteFilter()):
        received += 1
        if row["duplicate_of"] is not None:
            continue
        originals += 1
        stored_by[row["event"] or "-"] += 1
        if row["status"] == "done":
            handled += 1
            handled_by[row["event"] or "-"] += 1
        elif row["status"] in ("dead", "quarantined"):
            not_handled += 1
    report.received, report.stored = received, originals
    report.handled, report.not_handled = handled, not_handled
    for event in {*stored_by, *report.by_event}:
        counts = report.by_event.setdefault(event, [0, 0, 0])
        counts[1], counts[2] = stored_by[event], handled_by[event]
    return received, handled + not_handled


def kept_duimps(store: Store) -> int:
    """Stored originals whose handler kept its record: the Duimp for a registration or a
    rectification (by number and version), the situation for the others (by idempotency key)."""
    kept = 0
    for row in store.notes(NoteFilter(source="pucomex")):
        if row["duplicate_of"] is not None:
            continue
        found = reference(row["body"])
        if found is None:
            continue
        if row["event"] in REGISTRATION_EVENTS:
            value = load_result(store, "duimp", f"{found[0]}:{found[1]}")
            kept += isinstance(value, dict) and value.get("numeroDeclaracao") == found[0]
        else:
            kept += (
                load_result(store, "duimp-situacao", dedup_key("pucomex", row["body"])) is not None
            )
    return kept


def check(report: DemoReport) -> None:
    expected = report.deliveries_to_receiver
    if report.stored != expected:
        report.problems.append(f"stored {report.stored} notifications, expected {expected}")
    if report.handled != expected:
        report.problems.append(f"handled {report.handled} notifications, expected {expected}")
    if report.duimps_kept != report.emitted:
        report.problems.append(
            f"kept {report.duimps_kept} Duimp records, expected {report.emitted}"
        )
    if report.situations_matching != report.duimps:
        report.problems.append(
            f"the consultation answered the situation of the last event for "
            f"{report.situations_matching} of {report.duimps} Duimps"
        )
    if report.failure_records != report.expected_failure_records:
        report.problems.append(
            f"failure search found {report.failure_records} records for the failing endpoint, "
            f"expected {report.expected_failure_records}"
        )


def summary(report: DemoReport) -> str:
    rows: list[tuple[str, Any]] = [
        ("events emitted by the Portal simulator", report.emitted),
        ("notifications received by the receiver", report.received),
        ("stored (originals, acknowledged with 200)", report.stored),
        ("handled by handlers.duimp", report.handled),
        ("Duimp records fetched back and kept", report.duimps_kept),
        ("Duimps whose consultation matches their last event", report.situations_matching),
        ("failed deliveries (endpoint answering 500)", report.failed_deliveries),
        ("failure records found by the failure search", report.failure_records),
    ]
    width = max(len(label) for label, _ in rows)
    lines = [f"{label:<{width}}  {value:>6}" for label, value in rows]
    lines.append(f"{'seconds':<{width}}  {report.seconds:>6.1f}")
    lines.append("")
    lines.append(
        f"{'event id (event-type header)':<28} {'emitted':>8} {'stored':>8} {'handled':>8}"
    )
    for event, (emitted, stored, handled) in sorted(report.by_event.items()):
        lines.append(f"{event:<28} {emitted:>8} {stored:>8} {handled:>8}")
    lines.append("")
    lines.append("RESULT: " + ("ok" if report.ok else "FAILED: " + "; ".join(report.problems)))
    return "\n".join(lines)
