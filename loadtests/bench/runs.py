"""Running the targets: start one, warm it up, measure it under wrk, check that every 200 it
answered is in its store; a round runs every target once, bare first."""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from loadtests.bench.proc import (
    Ceiling,
    CpuUse,
    cpu_seconds,
    cpu_use,
    database_pids,
    machine_busy,
    peak_rss_mib,
    process_role,
    process_tree,
    pss_mib,
)
from loadtests.bench.targets import (
    PEER_APP,
    PEER_DATABASE_ENV,
    fresh_store,
    receiver_command,
    write_config,
)
from loadtests.bench.wrk import Load, run_wrk

# The bare endpoint runs in a process of its own, this package's --serve-bare; the folder the
# package is in goes on its path, as the runs' working folder is a temporary one.
PROJECT = Path(__file__).resolve().parents[2]
BARE_COMMAND = [sys.executable, "-m", "loadtests.bench"]


def bare_environment(env: dict[str, str]) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(PROJECT), env.get("PYTHONPATH", "")) if p)
    return {**env, "PYTHONPATH": path}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it listened")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on port {port} after {timeout:.0f} s")


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    request = b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it was ready")
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=1) as sock,
        ):
            sock.sendall(request)
            if sock.recv(64).startswith(b"HTTP/1.1 200"):
                return
        time.sleep(0.1)
    raise RuntimeError(f"server on port {port} not ready after {timeout} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Result:
    name: str
    processes: int
    load: Load
    rss_mib: list[tuple[str, float]] = field(default_factory=list)

    @property
    def serving_rss(self) -> float | None:
        """The largest peak RSS among the processes that serve requests, plus the largest of
        their writer processes': what one serving process costs with its writer."""
        sizes = [size for role, size in self.rss_mib if role in ("server", "worker")]
        writers = [size for role, size in self.rss_mib if role == "writer"]
        if not sizes:
            return None
        return max(sizes) + (max(writers) if writers else 0.0)

    stored_check: str = ""
    ratio: float | None = None  # over the bare endpoint with as many processes, in the same round
    cpu: CpuUse | None = None
    ceiling: Ceiling | None = None
    ceiling_ratio: float | None = None  # over the bare endpoint's ceiling, in the same round
    peer_ratio: float | None = None  # over the hand-written peer on the same store, same round

    @property
    def pss(self) -> float | None:
        """All the target's processes together, shared pages counted once (at the run's end)."""
        return next((size for role, size in self.rss_mib if role == "PSS of all"), None)


def drive(
    args: argparse.Namespace,
    name: str,
    cmd: Sequence[str],
    env: dict[str, str],
    port: int,
    workdir: Path,
    token: str,
    script: Path,
    database: bool = False,
    ready_port: int | None = None,
) -> tuple[Load, list[tuple[str, float]], Load, CpuUse]:
    """Start ``cmd``, warm it up, measure it; ``database``: count PostgreSQL's CPU too.
    ``ready_port``: where /healthz answers (the receiver's admin listener), else ``port``."""
    log = (workdir / f"{name}.log").open("wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    try:
        wait_ready(ready_port or port, proc)
        if ready_port is not None:
            # serve --workers N: the supervisor's admin listener answers before the webhook
            # socket is listening (wrk then failed: connection refused).
            wait_listening(port, proc)
        url = f"http://127.0.0.1:{port}/webhooks/pucomex"
        common = {
            "connections": args.connections,
            "threads": args.threads,
            "token": token,
            "workdir": workdir,
        }
        if args.warmup > 0:
            warm = run_wrk(args.wrk, script, url, seconds=args.warmup, run_tag=f"{name}w", **common)
        else:  # --warmup 0: the measured run starts cold, its p99 shows a cold-start spike
            warm = Load(0, 0.0, 0, 0.0, 0.0, 0.0, 0, {}, [])
        tree = process_tree(proc.pid)
        roles = {
            pid: ("writers" if role == "writer" else "serving")
            for pid in tree
            if (role := process_role(pid, proc.pid))
        }
        roles.update({pid: "database" for pid in (database_pids() if database else [])})
        before = {pid: cpu_seconds(pid) for pid in roles}
        machine_before = machine_busy()
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        load = run_wrk(args.wrk, script, url, seconds=args.duration, run_tag=name, **common)
        cpu = cpu_use(roles, before, machine_before, children_before, load.requests)
        rss = [
            (role, r)
            for pid in process_tree(proc.pid)
            if (role := process_role(pid, proc.pid)) and (r := peak_rss_mib(pid)) is not None
        ]
        rss.append(("PSS of all", sum(pss_mib(pid) for pid in process_tree(proc.pid))))
    finally:
        stop(proc)
        log.close()
    if proc.returncode not in (0, -signal.SIGTERM):
        print(f"  note: {name} server exited with {proc.returncode}; see {workdir / name}.log")
    return load, rss, warm, cpu


def check_stored(load: Load, warm: Load, ids: set[str], ours: int, name: str) -> tuple[str, bool]:
    missing = [i for i in load.ids if i not in ids]
    missing_warm = [i for i in warm.ids if i not in ids]
    ok = not missing and not missing_warm and len(load.ids) == load.ok
    verdict = "OK" if ok else "FAILED"
    text = (
        f"{verdict}: {load.ok} 200s in the measured run, {len(load.ids) - len(missing)} of their "
        f"ids found in the store ({len(missing)} missing); warm-up {warm.ok} 200s, "
        f"{len(missing_warm)} missing; rows with this run's marker: {ours} "
        f"(may exceed the 200s by requests in flight when wrk stopped)"
    )
    return text, ok


def bare_process_counts(sqlite_workers: int | None, pg_workers: int | None) -> list[int]:
    """The bare endpoint runs with each process count a receiver target uses: its ratio's base."""
    return sorted({n for n in (sqlite_workers, pg_workers) if n is not None}) or [1]


def run_round(
    args: argparse.Namespace,
    round_number: int,
    wanted: Callable[[str], bool],
    pg_server: str | None,
    workdir: Path,
    script: Path,
    env: dict[str, str],
    token: str,
    results: list[Result],
) -> bool:
    """Every target once, bare first, so each ratio compares runs made minutes apart at most.
    False if a store check failed."""
    ok_all = True
    suffix = f"r{round_number}"
    bare_runs: dict[int, Result] = {}  # by process count: the base of the ratios
    bare_procs = bare_process_counts(
        args.sqlite_workers if wanted("sqlite") else None,
        args.pg_workers if pg_server else None,
    )
    for procs in bare_procs:
        port = free_port()
        cmd = [*BARE_COMMAND, "--serve-bare", str(port), "--bare-workers", str(procs)]
        print(f"(a) bare Starlette, {procs} process(es) ...", flush=True)
        load, rss, _, cpu = drive(
            args, f"bare{procs}p{suffix}", cmd, bare_environment(env), port, workdir, token, script
        )
        ceiling = cpu.ceiling(os.cpu_count() or 1, procs, args.threads)
        bare_runs[procs] = Result(f"(a) bare, {procs}p", procs, load, rss, cpu=cpu, ceiling=ceiling)
        results.append(bare_runs[procs])
        report(results[-1], None)
    if args.raw:
        port = free_port()
        cmd = [*BARE_COMMAND, "--serve-bare", str(port)]
        print("(a') plain ASGI callable on uvicorn, no Starlette, 1 process ...", flush=True)
        load, rss, _, cpu = drive(
            args,
            f"raw{suffix}",
            [*cmd, "--serve-raw"],
            bare_environment(env),
            port,
            workdir,
            token,
            script,
        )
        results.append(Result("(a') plain ASGI, 1p (info)", 0, load, rss, cpu=cpu))
        report(results[-1], None)

    targets: list[tuple[str, str, int]] = []
    if wanted("sqlite"):
        targets.append(("sqlite", "(b) receiver, SQLite", args.sqlite_workers))
    if args.worker:
        targets.append(("worker", "(b') SQLite, worker in process", 1))
    if pg_server:
        targets.append(("postgres", "(c) receiver, PostgreSQL", args.pg_workers))
    receivers: dict[str, Result] = {}
    for name, label, procs in targets:
        tag = f"{name}{suffix}"  # every run's bodies carry their own marker: checked apart
        with fresh_store(pg_server if name == "postgres" else None, workdir / f"{tag}.db") as (
            db_url,
            stored_ids,
        ):
            config = write_config(workdir, db_url, name)
            upgrade(db_url)  # serve refuses tables that are not at this release's revision
            port, admin = free_port(), free_port()
            cmd = [
                *receiver_command(),
                "serve",
                "--config",
                str(config),
                "--port",
                str(port),
                "--admin-listen",
                f"127.0.0.1:{admin}",
            ]
            if name != "worker":
                cmd.append("--no-worker")
            if procs != 1:
                cmd += ["--workers", str(procs)]
            print(f"{label}, {procs} process(es) ...", flush=True)
            load, rss, warm, cpu = drive(
                args,
                tag,
                cmd,
                env,
                port,
                workdir,
                token,
                script,
                database=name == "postgres",
                ready_port=admin,
            )
            ids, ours = stored_ids(tag)
        text, ok = check_stored(load, warm, ids, ours, tag)
        ok_all &= ok
        bare = bare_runs.get(procs)
        ratio = load.rps / bare.load.rps if bare and bare.load.rps else None
        ceiling = cpu.ceiling(os.cpu_count() or 1, procs, args.threads)
        bare_ceiling = bare.ceiling if bare else None
        result = Result(
            f"{label}, {procs}p",
            procs,
            load,
            rss,
            text,
            ratio,
            cpu,
            ceiling,
            ceiling.rps / bare_ceiling.rps if bare_ceiling else None,
        )
        results.append(result)
        report(result, bare.load if bare else None)
        receivers[name] = result
    if args.peer:
        peers: list[tuple[str, str, int]] = []
        if wanted("sqlite"):
            peers.append(("sqlite", "(d) peer, SQLite", 1))
        if pg_server:
            peers.append(("postgres", "(d) peer, PostgreSQL", args.pg_workers))
        for store_kind, label, procs in peers:
            ok_all &= run_peer(
                args,
                store_kind,
                label,
                procs,
                pg_server,
                suffix,
                workdir,
                env,
                token,
                script,
                bare_runs,
                receivers,
                results,
            )
    return ok_all


def run_peer(
    args: argparse.Namespace,
    store_kind: str,
    label: str,
    procs: int,
    pg_server: str | None,
    suffix: str,
    workdir: Path,
    env: dict[str, str],
    token: str,
    script: Path,
    bare_runs: dict[int, Result],
    receivers: dict[str, Result],
    results: list[Result],
) -> bool:
    """The hand-written peer (``loadtests.bench.peer``) on a fresh store of the same kind; the
    receiver's results of this round get their ratio over it."""
    tag = f"peer{store_kind}{suffix}"
    with fresh_store(pg_server if store_kind == "postgres" else None, workdir / f"{tag}.db") as (
        db_url,
        stored_ids,
    ):
        port = free_port()
        cmd = [
            *BARE_COMMAND,
            "--serve-bare",
            str(port),
            "--bare-workers",
            str(procs),
            "--serve-app",
            PEER_APP,
        ]
        print(f"{label}, {procs} process(es) ...", flush=True)
        load, rss, warm, cpu = drive(
            args,
            tag,
            cmd,
            bare_environment({**env, PEER_DATABASE_ENV: db_url}),
            port,
            workdir,
            token,
            script,
            database=store_kind == "postgres",
        )
        ids, count = stored_ids(tag)
    text, ok = check_stored(load, warm, ids, count, tag)
    bare = bare_runs.get(procs)
    result = Result(
        f"{label}, {procs}p",
        procs,
        load,
        rss,
        text,
        load.rps / bare.load.rps if bare and bare.load.rps else None,
        cpu,
    )
    results.append(result)
    report(result, bare.load if bare else None)
    for name, receiver in receivers.items():
        if (name == "postgres") == (store_kind == "postgres") and load.rps:
            receiver.peer_ratio = receiver.load.rps / load.rps
            print(f"  {receiver.name} over this peer: {receiver.peer_ratio:.1f}x")
    print(flush=True)
    return ok


def upgrade(database_url: str) -> None:
    """What ``receiver db upgrade`` does, on the run's fresh store (not the peer's: its table is
    its own)."""
    from receiver.store import Store

    store = Store(database_url)
    try:
        store.upgrade_schema()
    finally:
        store.close()


def report(result: Result, bare: Load | None) -> None:
    load = result.load
    print(
        f"  {load.rps:,.0f} req/s over {load.seconds:.1f} s ({load.requests} responses, "
        f"{load.ok} x 200), p50 {load.p50_ms:.2f} ms, p99 {load.p99_ms:.2f} ms, "
        f"max {load.max_ms:.1f} ms, errors {load.errors} {load.statuses}"
    )
    if bare is not None and bare.rps:
        print(f"  ratio to bare with the same process count: {load.rps / bare.rps:.2f}")
    if result.rss_mib:
        print(
            "  peak RSS (VmHWM): "
            + ", ".join(f"{role} {size:.1f} MiB" for role, size in result.rss_mib)
        )
    if result.cpu is not None:
        print(f"  {result.cpu.describe()}")
    if result.ceiling is not None:
        print(
            f"  CPU ceiling: {result.ceiling.rps:,.0f} req/s, set by the {result.ceiling.bound}"
            + (
                f"; over the bare endpoint's: {result.ceiling_ratio:.2f}"
                if result.ceiling_ratio is not None
                else ""
            )
        )
    if result.stored_check:
        print(f"  store check: {result.stored_check}")
    print(flush=True)
