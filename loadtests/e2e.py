"""End to end burst: 10,000 notifications from the Portal simulator through the receiver's handlers.

    .venv/bin/python loadtests/e2e.py [--notifications 10000]

Runs ``receiver demo``'s system (dispatcher and Portal API simulator, HTTPS receiver on SQLite with
its in-process worker, handlers.duimp fetching every Duimp back over mutual TLS) with enough Duimps
for the requested number of notifications, emitted as fast as the simulator stores them, and
prints how long it took until every one was stored and handled.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from receiver.simulator.demo import demo_events, run_demo, summary


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
    args = parser.parse_args()
    duimps = duimps_for(args.notifications)
    started = time.monotonic()
    last = [0.0]

    def say(line: str) -> None:
        # Timed, so the phases show: emitted, delivered (stored by the receiver), handled.
        if not line.startswith("  receiver:") or time.monotonic() - last[0] > 5:
            last[0] = time.monotonic()
            print(f"[{last[0] - started:6.1f} s] {line}", flush=True)

    report = asyncio.run(run_demo(duimps, say=say, patience_seconds=900))
    print()
    print(summary(report))
    rate = report.emitted / report.seconds if report.seconds else 0.0
    print(
        f"end to end: {report.emitted} notifications stored and handled in {report.seconds:.1f} s "
        f"({rate:.0f} per second, each one also fetching its Duimp back)"
    )
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
