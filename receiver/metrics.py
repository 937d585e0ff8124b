"""Prometheus metrics of ingest, the store, handlers and the Portal, in one registry per process,
served on the admin listener (``admin_listen``), never on the webhook port.

What the event loop records on every request is kept in plain integers and lists and read at
scrape time (``IngestCounts``, ``Buckets``): prometheus' own ``Counter.inc`` and
``Histogram.observe`` take a lock each, which the hot path cannot afford.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)


class IngestCounts(Collector):
    """What ingest counts on every request, kept as plain integers and read at scrape time.

    A prometheus ``Counter.inc`` takes a lock and costs about 0.7 us; ingest counted twice per
    request, on the event loop whose time bounds its throughput. Here a count is a dict increment.
    Only the event loop's thread writes them (a serving process has one loop), and the scrape
    reads them on that same loop, so no lock is needed.
    """

    def __init__(self) -> None:
        self.received: dict[str, int] = {}
        self.stored: dict[str, int] = {}
        self.duplicates: dict[str, int] = {}

    def add_source(self, source: str) -> None:
        """Show ``source`` with zero counts until its first request, as labelled counters do."""
        for counts in (self.received, self.stored, self.duplicates):
            counts.setdefault(source, 0)

    def collect(self) -> Iterator[CounterMetricFamily]:
        families = (
            ("receiver_requests", "Webhook requests received, by source", self.received),
            ("receiver_stored", "Notifications durably stored, by source", self.stored),
            (
                "receiver_duplicates",
                "Stored receipts of notifications already received, by source",
                self.duplicates,
            ),
        )
        for name, documentation, counts in families:
            family = CounterMetricFamily(name, documentation, labels=["source"])
            for source, value in sorted(counts.items()):
                family.add_metric([source], value)
            yield family


class Buckets:
    """One histogram's counts, as a list: ``observe`` is a bisect and two additions (about
    0.2 us, against 1.5 us for ``Histogram.observe`` with its lock and label lookup). Written
    and read by one thread, as ``IngestCounts`` is."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: the first bound >= value, as Prometheus' "le" (less or equal) wants.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        running = 0
        out: list[tuple[str, float]] = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
        return out


class LabelledHistograms(Collector):
    """Histograms of one name by one label, from ``Buckets``; ``add`` shows a label at zero."""

    def __init__(self, name: str, documentation: str, label: str, bounds: Iterable[float]):
        self.name = name
        self.documentation = documentation
        self.label = label
        self.bounds = tuple(bounds)
        self.by_label: dict[str, Buckets] = {}

    def add(self, value: str) -> Buckets:
        found = self.by_label.get(value)
        if found is None:
            found = self.by_label[value] = Buckets(self.bounds)
        return found

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=[self.label])
        for value, buckets in sorted(self.by_label.items()):
            family.add_metric([value], buckets.cumulative(), buckets.total)
        yield family


class Histograms(Collector):
    """Unlabelled histograms from ``Buckets`` (the store's commits, reported by its writer)."""

    def __init__(self, *histograms: tuple[str, str, Buckets]) -> None:
        self.histograms = histograms

    def collect(self) -> Iterator[Metric]:
        for name, documentation, buckets in self.histograms:
            family = HistogramMetricFamily(name, documentation)
            family.add_metric([], buckets.cumulative(), buckets.total)
            yield family


INGEST = IngestCounts()
REGISTRY.register(INGEST)
# The Portal counts an answer slower than 3.5 s as a failed delivery: the buckets around it say
# how close ingest comes (ack_timeout_seconds, 2 s by default, answers 503 before it).
INGEST_SECONDS = LabelledHistograms(
    "receiver_ingest_seconds",
    "Time from a webhook request's head to its answer (body read, checks, durable commit), by "
    "source; the Portal gives up after 3.5 s",
    "source",
    (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 2.5, 3, 3.5, 5),
)
REGISTRY.register(INGEST_SECONDS)
COMMIT_SECONDS = Buckets((0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
BATCH_SIZE = Buckets((1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024))
REGISTRY.register(
    Histograms(
        (
            "receiver_store_commit_seconds",
            "Time of ingest's group commits in the writer: one transaction and one fsync each",
            COMMIT_SECONDS,
        ),
        (
            "receiver_store_batch_size",
            "Notifications per group commit of ingest's writer",
            BATCH_SIZE,
        ),
    )
)
REJECTED = Counter(
    "receiver_rejected_total",
    "Webhook requests refused before storing, by source and reason",
    ["source", "reason"],
    registry=REGISTRY,
)
EDGE_REFUSED = Counter(
    "receiver_edge_refused_total",
    "Connections and requests refused by the serving protocol before the app, by reason "
    "(peer: address in no allowlist; header_bytes, header_count: request head too large; "
    "busy: connection limit reached)",
    ["reason"],
    registry=REGISTRY,
)
JOBS = Counter(
    "receiver_jobs_total",
    "Handler job attempts finished, by handler and outcome",
    ["handler", "outcome"],
    registry=REGISTRY,
)
HANDLER_SECONDS = Histogram(
    "receiver_handler_seconds",
    "Time spent in a handler attempt",
    ["handler"],
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
QUEUE_DEPTH = Gauge(
    "receiver_jobs_queue_depth", "Jobs by status in the inbox", ["status"], registry=REGISTRY
)
OLDEST_PENDING = Gauge(
    "receiver_oldest_pending_job_age_seconds",
    "Age of the oldest job still waiting to run (0 when none)",
    registry=REGISTRY,
)
QUARANTINED = Counter(
    "receiver_quarantined_total",
    "Notifications kept for review: unreadable or without a route",
    ["source"],
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "receiver_dead_letters_total",
    "Handler jobs sent to the dead letters (attempts used up, GiveUp, unreadable, handler gone, "
    "worker lost on the last attempt), by handler",
    ["handler"],
    registry=REGISTRY,
)
PORTAL_ERRORS = Counter(
    "receiver_portal_errors_total",
    "Calls to the Portal API that failed, per attempt: by endpoint (numbers as {n}) and HTTP "
    "status, or transport (no answer) and tls",
    ["endpoint", "status"],
    registry=REGISTRY,
)
PURGED = Counter(
    "receiver_retention_purged_total",
    "Notifications deleted by retention, by the status they had (results: handler results)",
    ["status"],
    registry=REGISTRY,
)
PORTAL_SUBSCRIPTION_ACTIVE = Gauge(
    "receiver_portal_subscription_active",
    "1 when a subscription of receiver.yaml is active at the Portal, 0 when it is missing or the "
    "Portal cancelled it (serve's watch)",
    ["evento", "endpoint"],
    registry=REGISTRY,
)
PORTAL_SUBSCRIPTIONS_NOT_ACTIVE = Gauge(
    "receiver_portal_subscriptions_not_active",
    "Subscriptions of receiver.yaml that are missing at the Portal or that it cancelled",
    registry=REGISTRY,
)
PORTAL_RECOVERED = Counter(
    "receiver_portal_recovered_total",
    "Notifications stored only because recovery found them in the Portal's failure search",
    registry=REGISTRY,
)
PORTAL_FAILURE_STREAK = Gauge(
    "receiver_portal_failure_streak_days",
    "Consecutive days with only failed deliveries of an event (the Portal cancels the "
    "subscription at 30)",
    ["evento"],
    registry=REGISTRY,
)
PORTAL_WATCH_UP = Gauge(
    "receiver_portal_watch_up",
    "1 when serve's last look at the Portal (subscriptions, failure search) succeeded",
    registry=REGISTRY,
)
ALERTS_FIRING = Gauge(
    "receiver_alerts_firing",
    "Alert episodes open, by rule (receiver.alerts; set by the process that evaluates them)",
    ["rule"],
    registry=REGISTRY,
)
PORTAL_FAILURES_UNSTORED = Gauge(
    "receiver_portal_failures_unstored",
    "Notifications in the Portal's failure search (today and yesterday) whose content the store "
    "does not hold, after the watch's recovery",
    registry=REGISTRY,
)
