"""How long stored notifications are kept: the ``retention:`` section of ``receiver.yaml``, and
which rows a purge may take (pure logic; ``receiver.store.purge`` deletes them, ``serve`` runs it
in the background and ``receiver inbox purge`` on demand).

The defaults keep everything past the Portal's recovery window. The Portal retries for 10
minutes, then lists what failed in its failure search, by day (``receiver portal recover --date``
stores what the store lacks), and cancels a subscription after 30 days of failures; serve's watch
recovers today and yesterday. A notification purged before a recovery of its day would be stored
again as new, and its handlers run again: so ``done`` and receipts are kept 90 days (three times
that window), and dead letters and quarantined notifications, which wait for a person, until
someone changes these settings. ``pending`` and ``failed`` notifications are never purged: their
handlers have not finished.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import Field

from receiver.configfile import Section

# The days the Portal keeps trying a subscription that only fails (then it cancels it): a purge
# of anything younger could meet a recovery of its day.
PORTAL_RECOVERY_DAYS = 30
DAY = timedelta(days=1)


class RetentionSettings(Section):
    """``retention:``: days to keep a notification after it was received, per status; null keeps
    it for good. Fractions of a day are allowed (tests, a busy lab)."""

    done_days: float | None = Field(default=90.0, gt=0)
    # Receipts of repeated deliveries (status duplicate): a record that the sender tried again.
    duplicate_days: float | None = Field(default=90.0, gt=0)
    dead_days: float | None = Field(default=None, gt=0)
    quarantined_days: float | None = Field(default=None, gt=0)
    # What handlers kept (ctx.save) and have not written again for this long. They are keyed by
    # the handler's own key (a Duimp by number and version), not by notification, so they are
    # not purged with one.
    results_days: float | None = Field(default=None, gt=0)
    # How often serve looks for what to purge; a look that finds work goes on in small batches
    # until none is left.
    every_seconds: float = Field(default=3600.0, gt=0)
    # Notifications deleted per transaction (with their jobs): small, so that SQLite's write
    # lock, which ingest's commits wait for, is held for milliseconds.
    batch_size: int = Field(default=200, ge=1, le=10_000)

    def by_status(self) -> dict[str, float]:
        """Status -> days kept, for the statuses that are purged at all."""
        days = {
            "done": self.done_days,
            "duplicate": self.duplicate_days,
            "dead": self.dead_days,
            "quarantined": self.quarantined_days,
        }
        return {status: kept for status, kept in days.items() if kept is not None}

    def cutoffs(self, now: datetime) -> dict[str, datetime]:
        """Status -> the moment before which a notification in that status is purged."""
        return {status: now - days * DAY for status, days in self.by_status().items()}

    def shorter_than_recovery(self) -> list[str]:
        """The keys that keep ``done`` notifications for less than the recovery window (a
        start-up warning)."""
        kept = self.done_days
        return ["done_days"] if kept is not None and kept < PORTAL_RECOVERY_DAYS else []
