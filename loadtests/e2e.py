"""End to end burst: 10,000 notifications from the Portal simulator through the receiver's handlers.

    .venv/bin/python loadtests/e2e.py [--notifications 10000] [--concurrency 32] [--in-process]

Runs ``receiver demo``'s system (dispatcher and Portal API simulator in this process; the HTTPS
receiver as ``receiver serve`` in a process of its own, on SQLite with its in-process worker,
handlers.duimp fetching every Duimp back over mutual TLS) with enough Duimps
for the requested number of notifications, emitted as fast as the simulator stores them, and
prints how long it took until every one was stored and handled, with the percentiles of each
notification's emit -> stored (its commit in the receiver) and stored -> handled (its last job's
outcome), and writes the run's figures as JSON (``--record``, default ``e2e-run.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from receiver.simulator.demo import demo_events, run_demo, summary

QUANTILES = {"p50": 0.50, "p90": 0.90, "p99": 0.99, "max": 1.0}


def percentiles(seconds: Sequence[float]) -> dict[str, float]:
    """Milliseconds at each of QUANTILES (nearest rank), and how many values."""
    if not seconds:
        return {}
    ordered = sorted(seconds)
    found = {
        name: round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)
        for name, q in QUANTILES.items()
    }
    found["mean"] = round(1000 * statistics.fmean(ordered), 1)
    found["count"] = len(ordered)
    return found


def revision() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def duimps_for(notifications: int) -> int:
    low, high = 1, notifications
    while low < high:  # the fewest Duimps whose events reach the count
        middle = (low + high) // 2
        if len(demo_events(middle)) >= notifications:
            high = middle
        else:
            low = middle + 1
    return low


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--notifications", type=int, default=10_000)
    parser.add_argument("--record", type=Path, default=Path("e2e-run.json"), help="JSON record")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="the receiver in the simulator's event loop, as `receiver demo` runs it (by default "
        "it is `receiver serve` in a process of its own, as users run it)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        # 10,000 notifications, receiver serve apart: 8: 64 s, 16: 58 s, 32: 52 s (and 46-51 s in
        # other runs); past 32 the receiver's worker falls further behind its ingest.
        default=32,
        help="deliveries in flight to the receiver at once (the dispatcher's "
        "per_endpoint_concurrency; 32)",
    )
    args = parser.parse_args()
    duimps = duimps_for(args.notifications)
    started = time.monotonic()
    last = [0.0]

    def say(line: str) -> None:
        # Timed, so the phases show: emitted, delivered (stored by the receiver), handled.
        if not line.startswith("  receiver:") or time.monotonic() - last[0] > 5:
            last[0] = time.monotonic()
            print(f"[{last[0] - started:6.1f} s] {line}", flush=True)

    report = asyncio.run(
        run_demo(
            duimps,
            say=say,
            patience_seconds=900,
            separate_process=not args.in_process,
            per_endpoint_concurrency=args.concurrency,
        )
    )
    print()
    print(summary(report))
    rate = report.emitted / report.seconds if report.seconds else 0.0
    print(
        f"end to end: {report.emitted} notifications stored and handled in {report.seconds:.1f} s "
        f"({rate:.0f} per second, each one also fetching its Duimp back)"
    )
    timings = {
        "emit_to_stored_ms": percentiles(report.emit_to_stored),
        "stored_to_handled_ms": percentiles(report.stored_to_handled),
    }
    print(
        f"until every notification was stored and handled: {report.handled_seconds:.1f} s "
        "(the rest of the run is the demo's own checks)"
    )
    for name, found in timings.items():
        shown = ", ".join(f"{key} {value}" for key, value in found.items())
        print(f"{name.removesuffix('_ms').replace('_', ' ')}: {shown or 'nothing measured'} (ms)")
    record = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "revision": revision(),
        "machine": {
            "cores": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
        },
        "receiver": "in-process" if args.in_process else "receiver serve",
        "per_endpoint_concurrency": args.concurrency,
        "notifications": report.emitted,
        "duimps": duimps,
        "seconds": round(report.seconds, 2),
        "seconds_until_all_handled": round(report.handled_seconds, 2),
        "per_second": round(rate, 1),
        "stored": report.stored,
        "handled": report.handled,
        "duimps_kept": report.duimps_kept,
        **timings,
        "ok": report.ok,
        "problems": report.problems,
    }
    args.record.write_text(json.dumps(record, indent=2) + "\n")
    print(f"record: {args.record}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
