"""``python -m loadtests.bench``: the command line, each target's report and the summary (the
package's docstring says what is measured)."""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import loadtests.bench as bench
from loadtests.bench.runs import Result, run_round
from loadtests.bench.targets import (
    GROUP_COMMIT_ENV,
    PORTAL_HEADERS_ENV,
    serve_bare,
    server_options,
)
from loadtests.bench.wrk import BODY_BYTES, SCRIPT, wrk_version


def summarise(results: Sequence[Result], rounds: int) -> None:
    """One line per target: medians over the rounds, and the range of the ratio."""
    print(f"\nsummary (medians over {rounds} rounds)")
    print(
        f"  {'target':<32} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
        f"{'ratio':>6} {'range':>11} {'ceiling':>8} {'/peer':>6} {'RSS MiB':>8} {'PSS MiB':>8}"
    )
    by_name: dict[str, list[Result]] = {}
    for result in results:
        by_name.setdefault(result.name, []).append(result)
    for name, runs in by_name.items():
        ratios = [r.ratio for r in runs if r.ratio is not None]
        ratio_text = f"{statistics.median(ratios):.2f}" if ratios else "-"
        spread = f"{min(ratios):.2f}-{max(ratios):.2f}" if len(ratios) > 1 else ""
        ceilings = [r.ceiling_ratio for r in runs if r.ceiling_ratio is not None]
        ceiling_text = f"{statistics.median(ceilings):.2f}" if ceilings else "-"
        over_peer = [r.peer_ratio for r in runs if r.peer_ratio is not None]
        peer_text = f"{statistics.median(over_peer):.1f}x" if over_peer else "-"
        rss = [r.serving_rss for r in runs if r.serving_rss is not None]
        pss = [r.pss for r in runs if r.pss is not None]
        print(
            f"  {name:<32} {statistics.median(r.load.rps for r in runs):>9.0f} "
            f"{statistics.median(r.load.p50_ms for r in runs):>8.2f} "
            f"{statistics.median(r.load.p99_ms for r in runs):>8.2f} "
            f"{sum(r.load.errors for r in runs):>7} {ratio_text:>6} {spread:>11} {ceiling_text:>8} "
            f"{peer_text:>6} "
            f"{max(rss) if rss else float('nan'):>8.0f} {max(pss) if pss else float('nan'):>8.0f}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.bench", description=(bench.__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per target (10)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every target this many times, alternating; the summary gives medians and the "
        "median of each round's ratio (runs on one machine vary by 5-10%%)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=2.0,
        help="seconds of warm-up (2); 0: none, the measured run starts as soon as the target is "
        "ready (--warmup 0 --duration 1: the first second's latency, a cold-start spike)",
    )
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (1: a core is 2)")
    parser.add_argument("--postgres", metavar="URL", help="also run (c) on this server")
    parser.add_argument("--pg-workers", type=int, default=2, help="processes for (c) (2)")
    parser.add_argument("--sqlite-workers", type=int, default=1, help="processes for (b) (1)")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated subset of bare,sqlite,postgres (bare runs whenever a ratio needs it)",
    )
    parser.add_argument("--wrk", default=shutil.which("wrk"), help=argparse.SUPPRESS)
    parser.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--bare-workers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--serve-app", help=argparse.SUPPRESS)
    parser.add_argument(
        "--peer",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run (d): a receiver written the usual way (Starlette + SQLModel, one commit "
        "per request) on each store measured, and print the receiver's ratio over it",
    )
    parser.add_argument("--serve-raw", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--worker",
        action="store_true",
        help="also run (b'): plain `receiver serve` on SQLite, its handler worker in process",
    )
    parser.add_argument(
        "--portal-headers",
        action="store_true",
        help="send what the Portal sends (event-type and the secret header, no Authorization) to "
        "a receiver whose pucomex credential is {type: header, name: secret}",
    )
    parser.add_argument(
        "--group-commit",
        metavar="YAML",
        help="the receiver targets' group_commit settings, as YAML flow mapping, e.g. "
        "'{max_wait_ms: 1}' (default: the receiver's own)",
    )
    parser.add_argument(
        "--raw",
        action="store_true",
        help="also measure a plain ASGI callable without Starlette (informative, 1 process)",
    )
    args = parser.parse_args(argv)

    if args.serve_bare:
        serve_bare(args.serve_bare, args.bare_workers, raw=args.serve_raw, app=args.serve_app)
        return 0
    if not args.wrk:
        print(
            "bench: `wrk` is not installed. It is the load generator this benchmark uses "
            "(locust cannot saturate the server on a small machine).\n"
            "Install it with `apt-get install -y wrk` (Debian/Ubuntu) and run again.",
            file=sys.stderr,
        )
        return 2
    only = {x.strip() for x in args.only.split(",") if x.strip()}
    if args.portal_headers:
        os.environ[PORTAL_HEADERS_ENV] = "1"  # read by write_config and by the Lua script
    if args.group_commit:
        os.environ[GROUP_COMMIT_ENV] = args.group_commit  # read by write_config

    def wanted(name: str) -> bool:
        return not only or name in only

    token = secrets.token_urlsafe(24)
    generator = (
        f"{wrk_version(args.wrk)} (C, epoll), {args.threads} thread(s), "
        f"{args.connections} connections, Lua script: unique {BODY_BYTES}-byte PUCOMEX bodies, "
        + ("event-type and secret headers" if args.portal_headers else "Bearer token")
        + ", id of every 200 recorded"
    )
    print(f"load generator: {generator}")
    print(f"server options: {server_options()}")
    print(f"per target: {args.warmup:g} s warm-up, then {args.duration:g} s measured\n")

    results: list[Result] = []
    ok_all = True
    with tempfile.TemporaryDirectory(prefix="receiver-bench-") as tmp:
        workdir = Path(tmp)
        script = SCRIPT
        env = {**os.environ, "BENCH_PUCOMEX_TOKEN": token}
        pg_server = args.postgres if args.postgres and wanted("postgres") else None
        for round_number in range(1, args.rounds + 1):
            if args.rounds > 1:
                print(f"round {round_number} of {args.rounds}\n", flush=True)
            ok_all &= run_round(
                args, round_number, wanted, pg_server, workdir, script, env, token, results
            )

    summarise(results, args.rounds)
    print(
        "\nratio: req/s over the bare Starlette endpoint with as many processes, in the same "
        "round (range: lowest and highest round); ceiling: the ratio of the two CPU "
        "ceilings, what these CPU costs per request would allow had no process ever waited for "
        "another (a ratio below it is lost to waiting; a target above it needs less CPU per "
        "request); /peer: req/s over the hand-written receiver (d) on the same store in the same "
        "round; RSS: the largest "
        "peak resident set (VmHWM) among the processes serving requests, plus the largest of "
        "their writer processes', highest round; PSS: every process of the target together at "
        "the end of a run, shared pages counted once, highest round"
    )
    print(f"load generator: {generator}")
    if not ok_all:
        print("STORE CHECK FAILED: some acknowledged notifications are not in the store")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())


if __name__ == "__main__":
    sys.exit(main())
