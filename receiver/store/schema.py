"""The receiver's schema history: where its revisions are, and what the release before
migrations made (for adopting its databases). See ``receiver.store.migrate``."""

from __future__ import annotations

from pathlib import Path

from receiver.store.migrate import Schema

RECEIVER_SCHEMA = Schema(
    name="receiver",
    location=Path(__file__).resolve().parent / "migrations",
    version_table="alembic_version",
    baseline="r0001",
    head="r0004",
    # Frozen: release 0.1.0's create_all made exactly these (revision r0001 writes them out).
    baseline_tables={
        "notifications": frozenset(
            {
                "id",
                "source",
                "event",
                "received_at",
                "client_ip",
                "headers",
                "body",
                "dedup_key",
                "duplicate_of",
                "status",
                "routed",
                "error",
                "recovered",
            }
        ),
        "jobs": frozenset(
            {
                "id",
                "notification_id",
                "handler",
                "status",
                "attempts",
                "next_attempt_at",
                "lease_until",
                "last_error",
                "created_at",
                "updated_at",
            }
        ),
        "handler_results": frozenset({"kind", "key", "value", "updated_at"}),
    },
    upgrade_command="receiver db upgrade",
)
