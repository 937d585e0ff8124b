"""Ingest's latency while serve's retention purges: the same load (wrk, a Portal-sized POST) on
`receiver serve --no-worker` on SQLite, whose file holds --rows notifications that are done and
30 days old, once with retention off (nothing purged) and once with retention on (done kept 1
day: every one of them is purged during the run, in batches of --batch). Prints p50, p99 and max
of each run, how many rows the purge deleted meanwhile, and the ratio of the p99s.

    .venv/bin/python loadtests/retention.py [--rows 100000] [--duration 20] [--batch 200]

Needs wrk (apt-get install wrk). Timings on a shared machine are noisy: compare the two runs of
one invocation, not figures of different days.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest.mock import patch

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from receiver.sources import dedup_key
from receiver.store import NOTES, Incoming, Store, utcnow
from tests.acceptance.conftest import free_port, wait_ready

BODY = b'{"evento": "duimp.registro", "dados": {"numero": "26BR0000000001", "pad": "%s"}}' % (
    b"x" * 900
)
LUA = (
    'wrk.method = "POST"\n'
    f"wrk.body = '{BODY.decode()}'\n"
    'wrk.headers["Content-Type"] = "application/json"\n'
)


def prefill(url: str, rows: int) -> None:
    """``rows`` done notifications received 30 days ago (their ids made then: time-ordered)."""
    store = Store(url)
    store.upgrade_schema()
    then = utcnow() - timedelta(days=30)
    try:
        for start in range(0, rows, 2000):
            moment = int((then + timedelta(seconds=start)).timestamp() * 1e9)
            items = [
                Incoming(
                    "pucomex", "duimp.registro", "127.0.0.1", {}, body, dedup_key("pucomex", body)
                )
                for body in (
                    b'{"n": %d, "pad": "%s"}' % (n, b"y" * 900)
                    for n in range(start, min(rows, start + 2000))
                )
            ]
            with patch("time.time_ns", lambda moment=moment: moment):
                store.append_now(items)
        with store.engine.begin() as conn:
            conn.execute(NOTES.update().values(status="done", routed=True, received_at=then))
    finally:
        store.close()


def run(folder: Path, rows: int, duration: int, retention: dict[str, Any]) -> dict[str, float]:
    folder.mkdir()
    database = folder / "receiver.db"
    prefill(f"sqlite:///{database}", rows)
    (folder / "allowlist.yaml").write_text("pucomex: [127.0.0.1]\n")
    port, admin = free_port(), free_port()
    (folder / "receiver.yaml").write_text(
        yaml.safe_dump(
            {
                "database_url": f"sqlite:///{database}",
                "allowlist": "allowlist.yaml",
                "sources": {"pucomex": {"credentials": []}},
                "admin_listen": f"127.0.0.1:{admin}",
                "retention": retention,
                "log_level": "WARNING",
            }
        )
    )
    (folder / "post.lua").write_text(LUA)
    serve = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "receiver",
            "serve",
            "--no-worker",
            "--config",
            "receiver.yaml",
            "--port",
            str(port),
        ],
        cwd=folder,
        stdout=(folder / "serve.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_ready(f"http://127.0.0.1:{admin}", serve)
        load = subprocess.run(
            [
                "wrk",
                "-t2",
                "-c32",
                f"-d{duration}s",
                "--latency",
                "-s",
                str(folder / "post.lua"),
                f"http://127.0.0.1:{port}/webhooks/pucomex",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        metrics = httpx.get(f"http://127.0.0.1:{admin}/metrics", timeout=10).text
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=60)
    purged = re.search(r'receiver_retention_purged_total\{status="done"\} (\S+)', metrics)
    return {
        "p50_ms": _ms(re.search(r"50%\s+(\S+)", load)),
        "p99_ms": _ms(re.search(r"99%\s+(\S+)", load)),
        "max_ms": _ms(re.search(r"Latency\s+\S+\s+\S+\s+(\S+)", load)),
        "rps": float(re.search(r"Requests/sec:\s+(\S+)", load)[1]),  # type: ignore[index]
        "purged": float(purged[1]) if purged else 0.0,
        "file_mib": sum(p.stat().st_size for p in folder.glob("receiver.db*")) / 2**20,
    }


def _ms(found: re.Match[str] | None) -> float:
    assert found is not None
    value = found[1]
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if value.endswith(unit):
            return float(value[: -len(unit)]) * factor
    return float(value)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--duration", type=int, default=20)
    parser.add_argument("--batch", type=int, default=200)
    args = parser.parse_args()
    off: dict[str, Any] = {"done_days": None, "duplicate_days": None}
    on: dict[str, Any] = {
        "done_days": 1,
        "duplicate_days": 1,
        "every_seconds": 1,
        "batch_size": args.batch,
    }
    with tempfile.TemporaryDirectory(prefix="retention-load-") as folder:
        for name, retention in (("retention off", off), ("retention on", on)):
            result = run(Path(folder) / name.replace(" ", "-"), args.rows, args.duration, retention)
            print(
                f"{name}: {result['rps']:,.0f} req/s, p50 {result['p50_ms']:.2f} ms, p99 "
                f"{result['p99_ms']:.2f} ms, max {result['max_ms']:.1f} ms; purged during the run "
                f"{result['purged']:,.0f} of {args.rows:,}; file {result['file_mib']:.0f} MiB",
                flush=True,
            )
            if name == "retention off":
                baseline = result
        print(f"p99 ratio (on / off): {result['p99_ms'] / baseline['p99_ms']:.2f}")
    os.sync()


if __name__ == "__main__":
    main()
