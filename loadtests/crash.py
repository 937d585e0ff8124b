"""Crash safety, repeated: bursts while the receiver is SIGKILLed at random moments, many times.

    .venv/bin/python loadtests/crash.py                      # SQLite, 10,000 notifications, >= 50 kills
    .venv/bin/python loadtests/crash.py --database postgresql://postgres@127.0.0.1:5432/test

The client behaves like a sender that never gives up: every notification is posted until it gets a
200. The receiver runs with its in-process worker and the acceptance handlers. Every 1-5 s one of
its processes is SIGKILLed, in turn the serving process (restarted here, with a new writer) and
its writer process (restarted by the serving process itself). At the end it prints kills survived
of each kind, notifications acknowledged, lost (acknowledged but not stored byte for byte: must
be 0), stored without a 200 (the sender retried them: they are receipts), and handler runs per
original (every original at least once, no receipt ever).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.acceptance.conftest import TOKEN, Deployment, duimp_body, free_port, wait_ready  # noqa: E402
from tests.conftest import reset_postgres  # noqa: E402


async def send_until_acknowledged(
    url: str,
    bodies: list[bytes],
    concurrency: int,
    acked: dict[bytes, str],
    every_ack: set[str],
    deadline: float,
) -> None:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for item in bodies:
        queue.put_nowait(item)

    async def sender() -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            while time.monotonic() < deadline:
                try:
                    item = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                try:
                    answer = await client.post(
                        url, content=item, headers={"Authorization": f"Bearer {TOKEN}"}
                    )
                    if answer.status_code == 200:
                        note_id = answer.json()["id"]
                        acked.setdefault(item, note_id)
                        every_ack.add(note_id)
                        continue
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
                queue.put_nowait(item)  # not acknowledged: send it again, as a sender would

    await asyncio.gather(*(sender() for _ in range(concurrency)))


def writer_of(serving: int) -> int | None:
    """The pid of the writer process that the serving process ``serving`` started, if running."""
    try:
        children = Path(f"/proc/{serving}/task/{serving}/children").read_text().split()
    except OSError:
        return None
    for child in children:
        try:
            if b"receiver.store.process" in Path(f"/proc/{child}/cmdline").read_bytes():
                return int(child)
        except OSError:
            continue
    return None


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database", default="sqlite", help="'sqlite' or a postgresql:// URL")
    parser.add_argument("--total", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument(
        "--kills", type=int, default=50, help="at least this many kills, half of each kind"
    )
    parser.add_argument("--max-seconds", type=float, default=900)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="receiver-crash-"))
    if args.database == "sqlite":
        url = f"sqlite:///{folder / 'receiver.db'}"
    else:
        url = args.database
        reset_postgres(url)
    deployment = Deployment(folder, url, worker={"poll_interval_seconds": 0.05, "lease_seconds": 3})
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = deployment.serve(port)
    bodies = [duimp_body(n) for n in range(args.total)]
    acked: dict[bytes, str] = {}  # each body's first acknowledgement
    every_ack: set[str] = set()  # every id answered 200, repeats included
    kills = Counter[str]()
    finished = threading.Event()
    deadline = time.monotonic() + args.max_seconds

    def killer() -> None:
        nonlocal server
        rng = random.Random(7)
        while not finished.is_set() and time.monotonic() < deadline:
            if finished.wait(rng.uniform(1.0, 5.0)):
                break
            kind = "serving" if kills["serving"] <= kills["writer"] else "writer"
            if kind == "writer":
                writer = writer_of(server.pid)
                if writer is None:  # between a writer's death and its restart: next time
                    continue
                os.kill(writer, signal.SIGKILL)
                kills["writer"] += 1
                continue
            server.send_signal(signal.SIGKILL)
            server.wait()
            kills["serving"] += 1
            server = deployment.start("serve", "--port", str(port))
            wait_ready(deployment.admin, server)

    thread = threading.Thread(target=killer)
    thread.start()
    started = time.monotonic()
    while True:
        todo = [item for item in bodies if item not in acked]
        enough = (
            kills.total() >= args.kills
            and min(kills["serving"], kills["writer"]) >= args.kills // 2
        )
        if not todo and enough:
            break
        if time.monotonic() > deadline:
            break
        # Once everything is in, keep sending repeats so kills land under load until enough happened.
        batch = todo or random.sample(bodies, min(len(bodies), 2000))
        asyncio.run(
            send_until_acknowledged(
                f"{base}/webhooks/pucomex", batch, args.concurrency, acked, every_ack, deadline
            )
        )
    finished.set()
    thread.join()
    elapsed = time.monotonic() - started

    # Let the worker finish every handler, then stop and read the store.
    from receiver.store import NoteFilter, Store

    store = Store(url)
    try:
        wait_until = time.monotonic() + 120
        while time.monotonic() < wait_until:
            pending = sum(
                1 for row in store.notes(NoteFilter()) if row["status"] not in ("done", "duplicate")
            )
            if pending == 0:
                break
            time.sleep(0.5)
        rows = {row["id"]: row for row in store.notes(NoteFilter())}
    finally:
        store.close()
        deployment.stop_all()

    lost = [i for b, i in acked.items() if i not in rows or rows[i]["body"] != b]
    lost += [i for i in every_ack if i not in rows]
    originals = Counter(row["body"] for row in rows.values() if row["duplicate_of"] is None)
    stored_without_200 = [i for i in rows if i not in every_ack]
    receipts = {i for i, row in rows.items() if row["duplicate_of"] is not None}
    runs = Counter(
        line.split()[1]
        for line in deployment.log.read_text().splitlines()
        if line.startswith("done")
    )
    unhandled = [i for i, row in rows.items() if row["duplicate_of"] is None and runs[i] == 0]

    print(f"database                     {args.database}")
    print(f"kills survived               {kills.total()}")
    print(f"  of the serving process     {kills['serving']}")
    print(f"  of the writer process      {kills['writer']}")
    print(f"seconds                      {elapsed:.1f}")
    print(f"notifications sent           {len(bodies)}")
    print(f"bodies acknowledged          {len(acked)}")
    print(f"200 answers (with repeats)   {len(every_ack)}")
    print(f"lost (acked, not stored)     {len(lost)}")
    print(f"bodies without an original   {len([b for b in bodies if b not in originals])}")
    print(f"originals per body (max)     {max(originals.values()) if originals else 0}")
    print(f"stored without a 200         {len(stored_without_200)}")
    print(f"receipts (duplicates)        {len(receipts)}")
    print(
        f"handler runs, originals      {sum(runs[i] for i in rows if i not in receipts)} "
        f"(re-runs after kills: {sum(max(0, runs[i] - 1) for i in rows)})"
    )
    print(f"handler runs on receipts     {sum(runs[i] for i in receipts)}")
    print(f"originals never handled      {len(unhandled)}")
    ok = (
        not lost
        and not unhandled
        and not any(runs[i] for i in receipts)
        and len(acked) == len(bodies)
    )
    print("RESULT", "ok" if ok else "FAILED")
    if ok:
        shutil.rmtree(folder, ignore_errors=True)
    else:
        print(f"kept for inspection: {folder} (receiver.yaml, process logs, handlers.log)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
