"""baseline: the dispatcher's tables of release 0.1.0

Written out, not derived from the models, so that later changes to the models never change what
this revision makes: it is the schema that the release before migrations made with
``create_all``, and what ``receiver dispatcher db upgrade`` checks before adopting such a database.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "d0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def _number10_id(name: str) -> sa.Column[int]:
    # BIGINT on PostgreSQL (Number(10) passes 2**31); SQLite autoincrements only a column
    # declared exactly INTEGER PRIMARY KEY.
    return sa.Column(
        name,
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    )


def _utc(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "dispatch_subscriptions",
        _number10_id("id"),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("evento", sa.String(40), nullable=False),
        sa.Column("endpoint", sa.String(500), nullable=False),
        sa.Column("auth_type", sa.String(8), nullable=False),
        sa.Column("auth_username", sa.String(200), nullable=True),
        sa.Column("auth_secret", sa.Text(), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        _utc("created_at"),
        _utc("updated_at"),
    )
    op.create_index(
        "ix_dispatch_subscriptions_owner_evento", "dispatch_subscriptions", ["owner", "evento"]
    )
    op.create_index("ix_dispatch_subscriptions_evento", "dispatch_subscriptions", ["evento"])
    op.create_table(
        "dispatch_events",
        sa.Column("id", sa.String(26), primary_key=True),
        sa.Column("evento", sa.String(40), nullable=False),
        _utc("emitted_at"),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("content_type", sa.String(100), nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.UniqueConstraint("idempotency_key"),
    )
    op.create_index("ix_dispatch_events_emitted_at", "dispatch_events", ["emitted_at"])
    op.create_index("ix_dispatch_events_evento", "dispatch_events", ["evento"])
    op.create_table(
        "dispatch_deliveries",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(26), sa.ForeignKey("dispatch_events.id"), nullable=False),
        sa.Column("subscription_id", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _utc("next_attempt_at"),
        _utc("lease_until", nullable=True),
        _utc("created_at"),
        _utc("updated_at"),
        _utc("delivered_at", nullable=True),
    )
    op.create_index("ix_dispatch_deliveries_event_id", "dispatch_deliveries", ["event_id"])
    op.create_index(
        "ix_dispatch_deliveries_due", "dispatch_deliveries", ["status", "next_attempt_at"]
    )
    op.create_index(
        "ix_dispatch_deliveries_subscription_id", "dispatch_deliveries", ["subscription_id"]
    )
    op.create_table(
        "dispatch_attempts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "delivery_id", sa.Integer(), sa.ForeignKey("dispatch_deliveries.id"), nullable=False
        ),
        sa.Column("number", sa.Integer(), nullable=False),
        _utc("started_at"),
        _utc("finished_at"),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("response_excerpt", sa.Text(), nullable=True),
    )
    op.create_index("ix_dispatch_attempts_delivery_id", "dispatch_attempts", ["delivery_id"])
    op.create_table(
        "dispatch_failures",
        _number10_id("id"),
        sa.Column("subscription_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "delivery_id", sa.Integer(), sa.ForeignKey("dispatch_deliveries.id"), nullable=False
        ),
        sa.Column("data", sa.String(8), nullable=False),
        _utc("recorded_at"),
        sa.Column("descricao", sa.Text(), nullable=False),
        sa.Column("evento", sa.String(40), nullable=False),
        sa.Column("conteudo", sa.Text(), nullable=False),
    )
    op.create_index("ix_dispatch_failures_data", "dispatch_failures", ["subscription_id", "data"])
    op.create_table(
        "dispatch_cancellations",
        # BIGSERIAL on PostgreSQL, as create_all made it from a lone BigInteger primary key.
        sa.Column("subscription_id", sa.BigInteger(), primary_key=True, autoincrement=True),
        _utc("cancelled_at"),
        sa.Column("motivo", sa.Text(), nullable=False),
    )
    op.create_table(
        "dispatch_duimp_situations",
        sa.Column("numero", sa.String(20), primary_key=True),
        sa.Column("versao", sa.Integer(), nullable=True),
        sa.Column("situacao", sa.String(60), nullable=True),
        sa.Column("canal", sa.String(20), nullable=True),
        _utc("updated_at"),
    )
