"""Prometheus metrics of ingest and handlers, in one registry per process."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
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


INGEST = IngestCounts()
REGISTRY.register(INGEST)
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
