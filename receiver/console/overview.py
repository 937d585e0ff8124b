"""The overview: ingest over the last hour and day, how fast acknowledgements went against the
Portal's 3.5 s budget, the job queue and the oldest pending notification, 503s.

Counts over time come from the store (ids are time-ordered, so each bucket is a primary-key range
count, never a table scan); latencies and 503s from this process's in-process counters
(``receiver.metrics``), which exist only where ingest runs: under ``serve`` on the admin listener.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, text

from receiver import metrics
from receiver.ids import id_floor, id_time
from receiver.store import JOBS, NEEDS_ATTENTION, NOTES, JobStatus, Store, utcnow

PORTAL_BUDGET_SECONDS = 3.5


@dataclass(frozen=True, slots=True)
class Series:
    title: str
    unit: str
    starts: list[datetime]
    counts: list[int]

    @property
    def total(self) -> int:
        return sum(self.counts)


@dataclass(frozen=True, slots=True)
class Latency:
    observed: int
    percentiles: dict[str, float | None]  # "p50" -> seconds (upper bucket bound), None: +Inf
    within_budget: float | None  # share answered within 3.5 s
    buckets: list[tuple[float, int]]  # (upper bound, count), +Inf as float("inf")


@dataclass(frozen=True, slots=True)
class Overview:
    hour: Series
    day: Series
    queue: dict[str, int]
    oldest_pending: timedelta | None
    latency: Latency | None  # None: no ingest in this process
    refused_503: int | None


def _series(store: Store, title: str, unit: str, end: datetime, step: timedelta, n: int) -> Series:
    starts = [end - step * (n - i) for i in range(n)]
    counts: list[int] = []
    with store.reading() as conn:
        for start in starts:
            counts.append(
                int(
                    conn.execute(
                        select(func.count())
                        .select_from(NOTES)
                        .where(NOTES.c.id >= id_floor(start), NOTES.c.id < id_floor(start + step))
                    ).scalar_one()
                )
            )
    return Series(title, unit, starts, counts)


def latency_now() -> Latency | None:
    histograms = list(metrics.INGEST_SECONDS.by_label.values())
    if not histograms:
        return None
    bounds = (*histograms[0].bounds, float("inf"))
    counts = [sum(h.counts[i] for h in histograms) for i in range(len(bounds))]
    observed = sum(counts)
    if observed == 0:
        return Latency(
            0, {"p50": None, "p95": None, "p99": None}, None, list(zip(bounds, counts, strict=True))
        )
    percentiles: dict[str, float | None] = {}
    for name, share in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        running = 0
        for bound, count in zip(bounds, counts, strict=True):
            running += count
            if running >= share * observed:
                percentiles[name] = None if bound == float("inf") else bound
                break
    within = sum(c for b, c in zip(bounds, counts, strict=True) if b <= PORTAL_BUDGET_SECONDS)
    return Latency(observed, percentiles, within / observed, list(zip(bounds, counts, strict=True)))


def refused_503() -> int | None:
    """Webhooks answered 503 by this process: the store could not commit in time, or ingest was
    at its in-flight limit (receiver_rejected_total reasons store and busy)."""
    if not metrics.INGEST_SECONDS.by_label:
        return None
    total = 0.0
    for family in metrics.REJECTED.collect():
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels.get("reason") in {"store", "busy"}:
                total += sample.value
    return int(total)


def overview(store: Store, now: datetime | None = None) -> Overview:
    now = now or utcnow()
    minute = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    hour = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    with store.reading() as conn:
        queue = {
            str(status): int(count)
            for status, count in conn.execute(
                select(JOBS.c.status, func.count())
                .where(JOBS.c.status.in_([JobStatus.PENDING, JobStatus.FAILED, JobStatus.RUNNING]))
                .group_by(JOBS.c.status)
            ).all()
        }
        oldest = conn.execute(
            select(func.min(NOTES.c.id)).where(NOTES.c.status == "pending", text(NEEDS_ATTENTION))
        ).scalar()
    return Overview(
        hour=_series(
            store, "Received per minute, last hour", "min", minute, timedelta(minutes=1), 60
        ),
        day=_series(store, "Received per hour, last day", "h", hour, timedelta(hours=1), 24),
        queue=queue,
        oldest_pending=(now - id_time(str(oldest))) if oldest else None,
        latency=latency_now(),
        refused_503=refused_503(),
    )
