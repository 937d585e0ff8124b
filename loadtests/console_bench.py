"""The console's page loads on a big store: fills a store with --rows notifications (one million
by default) by bulk inserts, then times what the inbox page reads (its first page and the counts
per status), a status filter, a rare source, a search by id, by a Duimp number among the newest,
and by text found nowhere (the worst case: a whole window scanned), one notification's page and
the overview. Prints the median of --runs
runs of each, in milliseconds.

    .venv/bin/python loadtests/console_bench.py [--rows 1000000] [--runs 7]
    .venv/bin/python loadtests/console_bench.py --postgres postgresql://postgres@127.0.0.1/bench

SQLite goes to a temporary file; PostgreSQL's tables are dropped and made anew. The rows span the
last 7 days, newest last: 96 % done, 1 % duplicates, 1 % dead, 0.5 % quarantined, 1 % failed,
0.5 % pending; 2 % from sintegre; bodies of about 300 bytes, each with its own Duimp number.
Not a test: figures on a shared machine vary; compare runs of one invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import insert, text

from receiver.console.details import note_details
from receiver.console.inbox import InboxFilter, inbox_page, status_counts
from receiver.console.overview import overview
from receiver.ids import RANDOM, id_floor
from receiver.sources import dedup_key
from receiver.store import NOTES, RECEIVER_TABLES, Store, utcnow

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
BATCH = 10_000
SPAN = timedelta(days=7)


def status_of(n: int) -> tuple[str, bool]:
    """(status, duplicate) of row n: the same mix on every run."""
    slot = n % 200
    if slot < 2:
        return "duplicate", True
    if slot < 4:
        return "dead", False
    if slot < 5:
        return "quarantined", False
    if slot < 7:
        return "failed", False
    if slot < 8:
        return "pending", False
    return "done", False


def fill(store: Store, rows: int) -> None:
    now = utcnow()
    start = now - SPAN
    step = SPAN / rows
    headers = json.dumps({"content-type": "application/json", "user-agent": "portal"})
    started = time.perf_counter()
    originals: list[str] = []
    for first in range(0, rows, BATCH):
        batch = []
        for n in range(first, min(first + BATCH, rows)):
            when = start + step * n
            # The id new_id would have made at `when`: its time digits, then 16 random ones.
            note_id = id_floor(when)[:10] + "".join(RANDOM.choices(CROCKFORD, k=16))
            status, duplicate = status_of(n)
            source = "sintegre" if n % 50 == 7 else "pucomex"
            body = json.dumps(
                {
                    "evento": "duimp.registro",
                    "numeroDuimp": f"26BR{n:010d}",
                    "versao": 1,
                    "importador": {"cnpj": "12345678000190", "nome": "Importadora Exemplo"},
                    "situacao": "DESEMBARACADA",
                    "observacao": "x" * 120,
                }
            ).encode()
            key = dedup_key(source, body)
            if duplicate and originals:
                key = dedup_key(source, b"original %d" % (n - 1))
            batch.append(
                {
                    "id": note_id,
                    "source": source,
                    "event": "duimp.registro",
                    "received_at": when,
                    "client_ip": "203.0.113.7",
                    "headers": headers,
                    "body": body,
                    "dedup_key": key,
                    "duplicate_of": originals[-1] if duplicate and originals else None,
                    "status": status,
                    "routed": status != "pending",
                    "error": "no handler for this event" if status == "quarantined" else None,
                    "recovered": False,
                }
            )
            if not duplicate:
                originals = [note_id]
        with store.engine.begin() as conn:
            conn.execute(insert(NOTES), batch)
        done = first + len(batch)
        if done % 100_000 == 0:
            print(f"  {done:>9,} rows, {time.perf_counter() - started:.0f} s", flush=True)
    settle(store)
    print(f"filled {rows:,} rows in {time.perf_counter() - started:.0f} s", flush=True)


def settle(store: Store) -> None:
    """Statistics for the planner; on PostgreSQL also VACUUM, which sets the visibility map that
    index-only scans need (autovacuum does it in service; right after a bulk load every index
    entry would need its table row: 150 ms instead of 10 for the capped counts)."""
    if store.dialect == "postgresql":
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE notifications"))
    else:
        with store.engine.begin() as conn:
            conn.execute(text("ANALYZE"))


def median_ms(work: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def measure(store: Store, rows: int, runs: int) -> None:
    newest = inbox_page(store, InboxFilter()).rows
    some_id = newest[7]["id"]
    recent_duimp = f"26BR{rows - 300:010d}"
    cases: list[tuple[str, Callable[[], object]]] = [
        ("inbox first page (50 newest)", lambda: inbox_page(store, InboxFilter())),
        ("counts per status (capped)", lambda: status_counts(store)),
        ("status = dead, first page", lambda: inbox_page(store, InboxFilter(status="dead"))),
        ("status = done, first page", lambda: inbox_page(store, InboxFilter(status="done"))),
        (
            "source = sintegre (2 %), first page",
            lambda: inbox_page(store, InboxFilter(source="sintegre")),
        ),
        ("search by id", lambda: inbox_page(store, InboxFilter(text=some_id))),
        ("search a recent Duimp number", lambda: inbox_page(store, InboxFilter(text=recent_duimp))),
        (
            "search text found nowhere (one window)",
            lambda: inbox_page(store, InboxFilter(text="no-such-text")),
        ),
        ("one notification's page", lambda: note_details(store, some_id)),
        ("overview (60 minute + 24 hour counts)", lambda: overview(store)),
        (
            "last day, status = quarantined",
            lambda: inbox_page(
                store, InboxFilter(status="quarantined", since=utcnow() - timedelta(days=1))
            ),
        ),
    ]
    found = inbox_page(store, InboxFilter(text=recent_duimp)).rows
    assert found and found[0]["id"], "the Duimp search found nothing"
    print(f"\n{store.dialect}, {rows:,} notifications, median of {runs} runs:")
    for name, work in cases:
        print(f"  {name:<42} {median_ms(work, runs):8.1f} ms", flush=True)
    print(
        f"  inbox page as served (first page + counts) {median_ms(lambda: (inbox_page(store, InboxFilter()), status_counts(store)), runs):8.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--postgres", metavar="URL", default=None)
    parser.add_argument(
        "--keep", action="store_true", help="with --postgres: measure what a previous run filled"
    )
    args = parser.parse_args()
    if args.postgres and args.keep:
        store = Store(args.postgres)
        settle(store)
        measure(store, store.count_notes(), args.runs)
        store.close()
        return
    if args.postgres:
        store = Store(args.postgres)
        with store.engine.begin() as conn:
            # Every table of the receiver and its revision: made anew by the upgrade below.
            for table in [*(t.name for t in reversed(RECEIVER_TABLES)), "alembic_version"]:
                conn.execute(text(f"DROP TABLE IF EXISTS {table} CASCADE"))
        store.upgrade_schema()
        fill(store, args.rows)
        measure(store, args.rows, args.runs)
        store.close()
        return
    with tempfile.TemporaryDirectory() as folder:
        store = Store(f"sqlite:///{os.path.join(folder, 'bench.db')}")
        store.upgrade_schema()
        fill(store, args.rows)
        measure(store, args.rows, args.runs)
        store.close()


if __name__ == "__main__":
    main()
