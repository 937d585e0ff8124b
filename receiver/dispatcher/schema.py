"""The dispatcher's schema history: its own revisions and version table, apart from the
receiver's (see ``receiver.store.migrate`` for why), and what the release before migrations made."""

from __future__ import annotations

from pathlib import Path

from receiver.store.migrate import Schema

DISPATCH_SCHEMA = Schema(
    name="dispatcher",
    location=Path(__file__).resolve().parent / "migrations",
    version_table="dispatch_alembic_version",
    baseline="d0001",
    head="d0001",
    # Frozen: release 0.1.0's create_all made exactly these (revision d0001 writes them out).
    baseline_tables={
        "dispatch_subscriptions": frozenset(
            {
                "id",
                "owner",
                "evento",
                "endpoint",
                "auth_type",
                "auth_username",
                "auth_secret",
                "deleted",
                "created_at",
                "updated_at",
            }
        ),
        "dispatch_events": frozenset(
            {"id", "evento", "emitted_at", "body", "content_type", "idempotency_key"}
        ),
        "dispatch_deliveries": frozenset(
            {
                "id",
                "event_id",
                "subscription_id",
                "status",
                "attempts",
                "next_attempt_at",
                "lease_until",
                "created_at",
                "updated_at",
                "delivered_at",
            }
        ),
        "dispatch_attempts": frozenset(
            {
                "id",
                "delivery_id",
                "number",
                "started_at",
                "finished_at",
                "status_code",
                "ok",
                "outcome",
                "response_excerpt",
            }
        ),
        "dispatch_failures": frozenset(
            {
                "id",
                "subscription_id",
                "delivery_id",
                "data",
                "recorded_at",
                "descricao",
                "evento",
                "conteudo",
            }
        ),
        "dispatch_cancellations": frozenset({"subscription_id", "cancelled_at", "motivo"}),
        "dispatch_duimp_situations": frozenset(
            {"numero", "versao", "situacao", "canal", "updated_at"}
        ),
    },
    upgrade_command="receiver dispatcher db upgrade",
)
