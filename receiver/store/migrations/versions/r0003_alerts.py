"""alerts: alert_episodes and alert_checks, for the alerts' evaluator (receiver.alerts)

At most one open episode per rule and subject (the partial unique index), so two evaluators, or
one restarted, never fire the same alert twice.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "r0003"
down_revision: str | None = "r0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "alert_episodes",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(600), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("fired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("fired_sent", sa.String(200), nullable=False),
        sa.Column("resolved_sent", sa.String(200), nullable=False),
    )
    op.create_index(
        "uq_alert_episodes_open",
        "alert_episodes",
        ["rule", "subject"],
        unique=True,
        sqlite_where=sa.text("resolved_at IS NULL"),
        postgresql_where=sa.text("resolved_at IS NULL"),
    )
    op.create_table(
        "alert_checks",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
    )
