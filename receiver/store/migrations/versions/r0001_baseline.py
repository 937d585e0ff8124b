"""baseline: the tables of release 0.1.0 (notifications, jobs, handler_results)

Written out, not derived from the models, so that later changes to the models never change what
this revision makes: it is the schema that the release before migrations made with
``create_all``, and what ``receiver db upgrade`` checks before adopting such a database.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "r0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("id", sa.String(26), primary_key=True),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("event", sa.String(120), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("client_ip", sa.String(64), nullable=False),
        sa.Column("headers", sa.Text(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("dedup_key", sa.LargeBinary(32), nullable=False),
        sa.Column("duplicate_of", sa.String(26), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("routed", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("recovered", sa.Boolean(), nullable=False),
    )
    op.create_index(
        "uq_notifications_original",
        "notifications",
        ["dedup_key"],
        unique=True,
        sqlite_where=sa.text("duplicate_of IS NULL"),
        postgresql_where=sa.text("duplicate_of IS NULL"),
    )
    op.create_index(
        "ix_notifications_unrouted",
        "notifications",
        ["id"],
        sqlite_where=sa.text("routed = 0"),
        postgresql_where=sa.text("routed = false"),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "notification_id", sa.String(26), sa.ForeignKey("notifications.id"), nullable=False
        ),
        sa.Column("handler", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("notification_id", "handler", name="uq_jobs_notification_handler"),
    )
    op.create_index("ix_jobs_notification_id", "jobs", ["notification_id"])
    op.create_index("ix_jobs_due", "jobs", ["status", "next_attempt_at"])
    op.create_table(
        "handler_results",
        sa.Column("kind", sa.String(64), primary_key=True),
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
