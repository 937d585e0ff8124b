"""console: console_audit, recovery_runs, and two partial indexes of notifications

What the operator console (receiver.console) reads and writes. ``console_audit``: every login
(failed ones too), logout and replay of the console. ``recovery_runs``: each run of the Portal
recovery and what it brought back (the console's Portal page). ``ix_notifications_attention`` (status, id) holds only the notifications in a
status an operator acts on (the inbox's status filter and counts); ``ix_notifications_duplicates``
only the receipts of repeats, by their original (a notification's page).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "r0004"
down_revision: str | None = "r0003"
branch_labels: str | None = None
depends_on: str | None = None

NEEDS_ATTENTION = "status IN ('pending', 'failed', 'dead', 'quarantined')"


def upgrade() -> None:
    op.create_table(
        "console_audit",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("who", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("client_ip", sa.String(64), nullable=False),
    )
    op.create_table(
        "recovery_runs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("day", sa.String(8), nullable=False),
        sa.Column("seen", sa.Integer(), nullable=False),
        sa.Column("distinct", sa.Integer(), nullable=False),
        sa.Column("already_stored", sa.Integer(), nullable=False),
        sa.Column("recovered", sa.Integer(), nullable=False),
        sa.Column("ids", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
    )
    op.create_index(
        "ix_notifications_attention",
        "notifications",
        ["status", "id"],
        sqlite_where=sa.text(NEEDS_ATTENTION),
        postgresql_where=sa.text(NEEDS_ATTENTION),
    )
    op.create_index(
        "ix_notifications_duplicates",
        "notifications",
        ["duplicate_of"],
        sqlite_where=sa.text("duplicate_of IS NOT NULL"),
        postgresql_where=sa.text("duplicate_of IS NOT NULL"),
    )
