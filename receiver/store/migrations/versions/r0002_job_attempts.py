"""job_attempts: every attempt of every job, with its outcome and, when it failed, the error

One row per attempt, written in the same transaction as the job's outcome. ``notification_id``
is indexed for ``receiver inbox show`` and for retention, which deletes a notification's attempts
before its jobs; ``job_id`` for deleting by job.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "r0002"
down_revision: str | None = "r0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "job_attempts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.Integer(), sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column(
            "notification_id", sa.String(26), sa.ForeignKey("notifications.id"), nullable=False
        ),
        sa.Column("handler", sa.String(200), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("error_type", sa.String(200), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("traceback", sa.Text(), nullable=True),
    )
    op.create_index("ix_job_attempts_notification_id", "job_attempts", ["notification_id"])
    op.create_index("ix_job_attempts_job_id", "job_attempts", ["job_id"])
