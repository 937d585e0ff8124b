"""The overview's counts over time: each notification in the minute and the hour its id was
made, whatever the bucketing does underneath; the queue and the oldest pending one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import insert

from receiver.console.overview import overview
from receiver.ids import id_floor
from receiver.store import NOTES, Store

NOW = datetime(2026, 11, 30, 15, 42, 30, tzinfo=UTC)


def note_at(store: Store, when: datetime, n: int, status: str = "done") -> None:
    note_id = id_floor(when)[:10] + f"{n:016d}"
    with store.engine.begin() as conn:
        conn.execute(
            insert(NOTES).values(
                id=note_id,
                source="pucomex",
                event="duimp.registro",
                received_at=when,
                client_ip="203.0.113.7",
                headers="{}",
                body=b"{}",
                dedup_key=f"{n:064x}",
                status=status,
                routed=status != "pending",
            )
        )


def test_counts_land_in_their_minute_and_hour(database_url: str) -> None:
    store = Store(database_url)
    store.upgrade_schema()
    try:
        # The minute of NOW ends at 15:43: the hour chart's last bar is 15:42.
        note_at(store, NOW, 1)
        # Minutes are counted to within a second (ids grouped by 1.024 s): clear of the edge.
        note_at(store, NOW.replace(second=2), 2)
        note_at(store, NOW.replace(second=0) - timedelta(seconds=2), 3)  # 15:41:58
        note_at(store, NOW - timedelta(minutes=59), 4)  # 14:43:30: the first bar
        note_at(store, NOW - timedelta(hours=5), 5, status="pending")  # 10:42: day chart only
        note_at(store, NOW - timedelta(days=2), 6)  # neither
        seen = overview(store, now=NOW)
    finally:
        store.close()
    assert seen.hour.counts[-1] == 2 and seen.hour.counts[-2] == 1
    assert seen.hour.counts[0] == 1 and seen.hour.total == 4
    assert f"{seen.hour.starts[-1]:%H:%M}" == "15:42"
    # The day chart's last bar is the hour 15:00-16:00.
    assert seen.day.counts[-1] == 3 and seen.day.counts[-2] == 1 and seen.day.counts[-6] == 1
    assert seen.day.total == 5
    assert seen.oldest_pending is not None
    assert timedelta(hours=4, minutes=59) < seen.oldest_pending < timedelta(hours=5, minutes=1)
