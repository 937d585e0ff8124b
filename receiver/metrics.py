"""Prometheus metrics of ingest and handlers, in one registry per process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

RECEIVED = Counter(
    "receiver_requests_total", "Webhook requests received, by source", ["source"], registry=REGISTRY
)
REJECTED = Counter(
    "receiver_rejected_total",
    "Webhook requests refused before storing, by source and reason",
    ["source", "reason"],
    registry=REGISTRY,
)
STORED = Counter(
    "receiver_stored_total",
    "Notifications durably stored, by source",
    ["source"],
    registry=REGISTRY,
)
DUPLICATES = Counter(
    "receiver_duplicates_total",
    "Stored receipts of notifications already received, by source",
    ["source"],
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
