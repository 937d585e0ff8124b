"""Ingest throughput side by side: bare Starlette, the receiver on SQLite, the receiver on PostgreSQL.

One run starts each target in turn on this machine, drives it with the same load and prints
requests/s, p50/p99 latency, errors, the receiver's ratio to the bare endpoint, its peak resident
memory, and whether every 200 it answered is in the store. It also prints the CPU each role spent
per request (serving, writers, PostgreSQL, the load generator), and from it the run's CPU ceiling:
the rate those costs would allow had no process ever waited for another. A ratio short of a
target while the ratio of the ceilings is above it is lost to waiting; a ceiling below the target
means the target needs less CPU per request, or more cores.

    .venv/bin/python loadtests/bench.py                      # bare + SQLite, 10 s each
    .venv/bin/python loadtests/bench.py --duration 20 \\
        --postgres postgresql://postgres@127.0.0.1:5432/test  # + PostgreSQL (2 processes)
    .venv/bin/python loadtests/bench.py --rounds 3 ...         # alternate 3 times; medians

The load generator is ``wrk`` (C, epoll), not locust: one locust process cannot saturate a uvicorn
worker on a 2-core machine, so its figures would measure locust. A Lua script gives every request
a unique ~1 KiB PUCOMEX body (no request is a duplicate receipt) and records the id of every 200,
so the store check is by id, not only by count. Install it with ``apt-get install -y wrk``.

Targets:

(a) ``bare``: a Starlette route that reads the body and answers a JSON 200, on uvicorn with the
    same server options as ``receiver serve`` (httptools, uvloop, one process; two for the
    comparison with PostgreSQL). Nothing is checked or stored: the ceiling.
(b) ``sqlite``: ``receiver serve --no-worker`` on a SQLite file in a temporary directory (WAL,
    synchronous=FULL), with the address allowlist (127.0.0.1) and the Bearer check on; with
    ``--portal-headers``, the ``secret`` header check instead, and every request naming its event
    in ``event-type``, as the Portal sends them.
(c) ``postgres``: the same on a fresh database created on the given server (dropped afterwards),
    with ``--workers 2``.
(b') ``worker`` (with ``--worker``): plain ``receiver serve`` on SQLite, its handler worker in the
    serving process as a user who starts only that command has it: the worker routes (here,
    quarantines: no handlers) what ingest stores, in write transactions of its own, while ingest
    commits. Its CPU counts as the serving process's.

This is a measuring tool, not a test: nothing here passes or fails on speed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

HERE = Path(__file__).resolve().parent
PORTAL_HEADERS_ENV = "BENCH_PORTAL_HEADERS"
BODY_BYTES = 1024
SERVER_OPTIONS = (
    "http=httptools loop=uvloop proxy_headers=False access_log=False "
    "timeout_keep_alive=5 limit_concurrency=4096"
)

# --- (a) the bare ceiling ----------------------------------------------------------------------


def _bare_app() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    answer = b'{"id":"00000000000000000000000000","duplicate":false}'

    async def webhook(request: Request) -> Response:
        await request.body()
        return Response(answer, media_type="application/json")

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return Starlette(
        routes=[
            Route("/webhooks/{source}", webhook, methods=["POST"]),
            Route("/healthz", healthz),
        ]
    )


def _raw_app() -> Any:
    """A plain ASGI callable: what uvicorn alone costs, without Starlette (informative only)."""
    answer = b'{"id":"00000000000000000000000000","duplicate":false}'
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(answer))]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    return app


def serve_bare(port: int, workers: int, raw: bool = False) -> None:
    import uvicorn

    uvicorn.run(
        "bench:_raw_app" if raw else "bench:_bare_app",
        factory=True,
        app_dir=str(HERE),
        host="127.0.0.1",
        port=port,
        workers=workers,
        http="httptools",
        loop="uvloop",
        proxy_headers=False,
        server_header=False,
        timeout_keep_alive=5,
        limit_concurrency=4096,  # as receiver serve does by default
        log_config=None,
        access_log=False,
        lifespan="off",
    )


# --- the load: wrk with a Lua script ------------------------------------------------------------

LUA = r"""
-- Unique ~1 KiB PUCOMEX bodies; records the id of every 200 so the store can be checked by id.
local run = os.getenv("BENCH_RUN") or "run"
local token = os.getenv("BENCH_TOKEN") or ""
local out = os.getenv("BENCH_OUT") or "/dev/null"
local size = tonumber(os.getenv("BENCH_BODY_BYTES") or "1024")
-- As the Portal sends them: the event in event-type, the secret in `secret`, no Authorization.
local portal = os.getenv("BENCH_PORTAL_HEADERS") == "1"
local threads = {}
local counter = 0
oks = 0
statuses = {}
answers = {}
pending = {}
held = 0

local events = {"duimp.registro", "duimp.retificacao", "duimp.desembaraco",
                "pcce.icms-solicitacao", "lpco.situacao-anuente", "duimp.entrega-com-prosseguimento"}
local template = '{"evento":"%s","dataHora":"2026-05-11T09:%02d:%02d-03:00","dados":{"numero":"26BR%s%08d",' ..
  '"versao":%d,"situacao":"REGISTRADA","importador":{"ni":"12345678000190","nome":"Importadora Exemplo Ltda"},' ..
  '"unidadeDespacho":"0817600","recintoAduaneiro":"8911101","canal":"VERDE","bench":"%s-%02d-%08d","obs":"%s"}}'
local pad = ""
local heads = {}  -- per event: the request line and headers, its bodies all being one length

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  tid = tid or 1  -- set by setup(): each thread's bodies differ from the others'
  local probe = string.format(template, events[6], 0, 0, "00", 0, 1, run, tid, 0, "")
  local n = size - #probe
  if n < 0 then n = 0 end
  pad = string.rep("x", n)
  -- Made once, not by wrk.format on every request: the generator's CPU is taken from the
  -- processes it measures. Every field of a body has a fixed width (up to 10^8 requests per
  -- thread), so its length is known.
  for i, event in ipairs(events) do
    local body = string.format(template, event, 0, 0, "00", 0, 1, run, tid, 0, pad)
    local credentials = "\r\nAuthorization: Bearer " .. token
    if portal then credentials = "\r\nevent-type: " .. event .. "\r\nsecret: " .. token end
    heads[i] = "POST " .. wrk.path .. " HTTP/1.1\r\nHost: " .. wrk.headers["Host"] ..
      "\r\nContent-Type: application/json" .. credentials ..
      "\r\nContent-Length: " .. #body .. "\r\n\r\n"
  end
end

function request()
  counter = counter + 1
  local index = (counter % #events) + 1
  return heads[index] .. string.format(template, events[index], counter % 60, counter % 60,
    string.format("%02d", tid), counter, (counter % 3) + 1, run, tid, counter, pad)
end

-- The body of every 200, for the store check by id (Python reads the ids out). Kept as it came
-- and joined a thousand at a time: a pattern match per answer and a table of one string per
-- answer (150,000 in a 10 s run) took wrk CPU from the processes it measures; on two cores the
-- receiver answered 11% more without them (bench --rounds 3: 14,284 -> 15,844 req/s).
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status == 200 then
    oks = oks + 1
    held = held + 1
    pending[held] = body
    if held == 1000 then
      answers[#answers + 1] = table.concat(pending, "\n")
      pending, held = {}, 0
    end
  end
end

function done(summary, latency, requests)
  local f = assert(io.open(out, "w"))
  local total_ok = 0
  local merged = {}
  for _, thread in ipairs(threads) do
    for _, chunk in ipairs(thread:get("answers")) do f:write(chunk, "\n") end
    for _, body in ipairs(thread:get("pending")) do f:write(body, "\n") end
    total_ok = total_ok + thread:get("oks")
    local st = thread:get("statuses")
    for k, v in pairs(st) do merged[tostring(k)] = (merged[tostring(k)] or 0) + v end
  end
  f:close()
  local parts = {}
  for k, v in pairs(merged) do table.insert(parts, string.format('"%s":%d', k, v)) end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"ok":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"statuses":{%s}}\n',
    summary.requests, summary.duration, total_ok, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, e.connect, e.read, e.write, e.status,
    e.timeout, table.concat(parts, ",")))
end
"""


@dataclass
class Load:
    requests: int
    seconds: float
    ok: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    statuses: dict[str, int]
    ids: list[str]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


_ANSWER_ID = re.compile(r'"id":"([0-9A-Z]+)"')


def answer_id(body: str) -> str:
    """The notification id in a 200's body ("" if it has none, which the store check counts
    as missing)."""
    found = _ANSWER_ID.search(body)
    return found.group(1) if found else ""


def wrk_version(wrk: str) -> str:
    out = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
    return (out.stdout + out.stderr).splitlines()[0].strip()


def run_wrk(
    wrk: str,
    script: Path,
    url: str,
    *,
    seconds: float,
    connections: int,
    threads: int,
    run_tag: str,
    token: str,
    workdir: Path,
) -> Load:
    out = workdir / f"ids-{run_tag}.txt"
    env = {
        **os.environ,
        "BENCH_RUN": run_tag,
        "BENCH_TOKEN": token,
        "BENCH_OUT": str(out),
        "BENCH_BODY_BYTES": str(BODY_BYTES),
    }
    cmd = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "5s",
        "-s",
        str(script),
        url,
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 60)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    data = json.loads(line[len("BENCH_JSON ") :])
    ids = [answer_id(line) for line in out.read_text().splitlines() if line]
    errors = sum(data[k] for k in ("connect", "read", "write", "status", "timeout"))
    return Load(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        ok=data["ok"],
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        errors=errors,
        statuses=data["statuses"],
        ids=ids,
    )


# --- starting and watching servers --------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def process_tree(pid: int) -> list[int]:
    pids = [pid]
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            children = (task / "children").read_text().split()
            for child in children:
                pids.extend(process_tree(int(child)))
    return pids


def is_writer(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return b"receiver.store.process" in Path(f"/proc/{pid}/cmdline").read_bytes()
    return False


def process_role(pid: int, main: int) -> str | None:
    """'server', or 'supervisor'/'worker' with several processes, 'writer' for a serving
    process's writer; None for helpers to ignore."""
    with contextlib.suppress(OSError):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"resource_tracker" in cmdline:
            return None
    if is_writer(pid):
        return "writer"
    if pid != main:
        return "worker"
    serving = [p for p in process_tree(main) if not is_writer(p)]
    return "supervisor" if len(serving) > 1 else "server"


def pss_mib(pid: int) -> float:
    """Proportional set size now: resident memory with shared pages split among their users, so
    that a serving process and its writer process are not both charged for the same libraries."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mib(pid: int) -> float | None:
    """VmHWM: the peak resident set of a live process, in MiB."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far (0.0 once it is gone)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        # The fields after the command name, which is in parentheses and may hold spaces.
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return 0.0


def database_pids() -> list[int]:
    """Every PostgreSQL server process on this machine (backends and background workers)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
    return pids


def machine_busy() -> tuple[int, int, int]:
    """Jiffies since boot, all CPUs: (busy, softirq, total). Busy counts softirq and steal."""
    user, nice, system, idle, iowait, irq, softirq, steal = (
        int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    busy = user + nice + system + irq + softirq + steal
    return busy, softirq, busy + idle + iowait


class Ceiling(NamedTuple):
    """The most requests per second a run's CPU costs allow (``CpuUse.ceiling``)."""

    rps: float
    bound: str  # what sets it: "cores", "serving process" or "load generator"


@dataclass
class CpuUse:
    """Where one measured run's CPU went, per request, and how busy the machine was."""

    per_request_us: dict[str, float]
    machine_busy: float  # share of all cores' time
    softirq: float  # share of all cores' time spent in softirq (loopback TCP, mostly)

    def describe(self) -> str:
        roles = ", ".join(f"{role} {us:.1f}" for role, us in self.per_request_us.items())
        return (
            f"CPU per request (us): {roles}; machine {100 * self.machine_busy:.0f}% busy "
            f"({100 * self.softirq:.0f}% softirq) on {os.cpu_count()} cores"
        )

    def ceiling(self, cores: int, serving_processes: int, generator_threads: int) -> Ceiling:
        """The most requests per second these CPU costs allow, had no process ever waited.

        Every role's CPU has to fit in the machine's cores; each serving process (one event loop)
        in one core; the load generator in its threads. A run below its ceiling lost the rest to
        waiting (for a commit, for its turn on a core); a target above the ceiling can only be
        met by spending less CPU per request.
        """
        us = self.per_request_us
        bounds = {"cores": cores * 1e6 / max(1e-9, sum(us.values()))}
        if us.get("serving"):
            bounds["serving process"] = serving_processes * 1e6 / us["serving"]
        if us.get("load generator"):
            bounds["load generator"] = generator_threads * 1e6 / us["load generator"]
        bound = min(bounds, key=lambda name: bounds[name])
        return Ceiling(bounds[bound], bound)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- the receiver under test -------------------------------------------------------------------


def receiver_command() -> list[str]:
    beside = Path(sys.executable).parent / "receiver"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("receiver")
    if found is None:
        sys.exit("bench: the `receiver` command is not installed (pip install -e .)")
    return [found]


def write_config(workdir: Path, database_url: str, name: str) -> Path:
    allowlist = workdir / "allowlist.yaml"
    allowlist.write_text("pucomex: [127.0.0.1]\nsintegre: [127.0.0.1]\ninvoicy: [127.0.0.1]\n")
    config = workdir / f"{name}.yaml"
    config.write_text(
        "\n".join(
            [
                f"database_url: {json.dumps(database_url)}",
                f"allowlist: {json.dumps(str(allowlist))}",
                "trusted_proxies: []",
                "max_body_bytes: 1048576",
                "log_level: WARNING",
                "sources:",
                "  pucomex:",
                "    credentials:",
                (
                    "      - {type: header, name: secret, value: env:BENCH_PUCOMEX_TOKEN}"
                    if os.environ.get(PORTAL_HEADERS_ENV) == "1"
                    else "      - {type: bearer, token: env:BENCH_PUCOMEX_TOKEN}"
                ),
                "  sintegre:",
                "    credentials:",
                "      - {type: basic, username: ons, password: env:BENCH_PUCOMEX_TOKEN}",
                "  invoicy:",
                "    credentials: []",
                "handlers: []",
                "",
            ]
        )
    )
    return config


def stored_ids_sqlite(path: Path, tag: str) -> tuple[set[str], int]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        ids = {row[0] for row in conn.execute("SELECT id FROM notifications")}
        ours = conn.execute(
            "SELECT count(*) FROM notifications WHERE instr(body, ?) > 0",
            (f'"bench":"{tag}-'.encode(),),
        ).fetchone()[0]
    return ids, int(ours)


def stored_ids_postgres(url: str, tag: str) -> tuple[set[str], int]:
    import psycopg

    with psycopg.connect(url) as conn:
        ids = {row[0] for row in conn.execute("SELECT id FROM notifications")}
        row = conn.execute(
            "SELECT count(*) FROM notifications WHERE position(%s in body) > 0",
            (f'"bench":"{tag}-'.encode(),),
        ).fetchone()
    return ids, int(row[0]) if row else 0


@contextlib.contextmanager
def scratch_database(url: str) -> Iterator[str]:
    """A fresh database on the given server, dropped afterwards, so nothing else is touched."""
    import psycopg

    name = f"receiver_bench_{secrets.token_hex(4)}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    parts = urlsplit(url)
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextlib.contextmanager
def fresh_store(
    pg_server: str | None, sqlite_path: Path
) -> Iterator[tuple[str, Callable[[str], tuple[set[str], int]]]]:
    """An empty store for one run, and how to read back what a run stored in it.

    Every run starts empty, so that rounds measure the same thing: a store grown by earlier rounds
    commits more slowly (its dedup index outgrows the page cache), which a long run shows apart.
    """
    if pg_server is None:
        yield f"sqlite:///{sqlite_path}", lambda tag: stored_ids_sqlite(sqlite_path, tag)
        return
    with scratch_database(pg_server) as url:
        yield url, lambda tag: stored_ids_postgres(url, tag)


# --- one target ---------------------------------------------------------------------------------


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
) -> tuple[Load, list[tuple[str, float]], Load, CpuUse]:
    """Start ``cmd``, warm it up, measure it; ``database``: count PostgreSQL's CPU too."""
    log = (workdir / f"{name}.log").open("wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    try:
        wait_ready(port, proc)
        url = f"http://127.0.0.1:{port}/webhooks/pucomex"
        common = {
            "connections": args.connections,
            "threads": args.threads,
            "token": token,
            "workdir": workdir,
        }
        warm = run_wrk(args.wrk, script, url, seconds=args.warmup, run_tag=f"{name}w", **common)
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


def cpu_use(
    roles: dict[int, str],
    before: dict[int, float],
    machine_before: tuple[int, int, int],
    children_before: resource.struct_rusage,
    requests: int,
) -> CpuUse:
    """CPU per request by role since ``before``; the load generator's is that of the children
    this process waited for meanwhile (wrk, and nothing else runs as our child then)."""
    spent: dict[str, float] = {}
    for pid, role in roles.items():
        spent[role] = spent.get(role, 0.0) + cpu_seconds(pid) - before[pid]
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    spent["load generator"] = (children.ru_utime - children_before.ru_utime) + (
        children.ru_stime - children_before.ru_stime
    )
    busy, softirq, total = machine_busy()
    elapsed = max(1, total - machine_before[2])
    return CpuUse(
        {role: 1e6 * seconds / max(1, requests) for role, seconds in spent.items()},
        (busy - machine_before[0]) / elapsed,
        (softirq - machine_before[1]) / elapsed,
    )


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
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--serve-bare",
            str(port),
            "--bare-workers",
            str(procs),
        ]
        print(f"(a) bare Starlette, {procs} process(es) ...", flush=True)
        load, rss, _, cpu = drive(
            args, f"bare{procs}p{suffix}", cmd, env, port, workdir, token, script
        )
        ceiling = cpu.ceiling(os.cpu_count() or 1, procs, args.threads)
        bare_runs[procs] = Result(f"(a) bare, {procs}p", procs, load, rss, cpu=cpu, ceiling=ceiling)
        results.append(bare_runs[procs])
        report(results[-1], None)
    if args.raw:
        port = free_port()
        cmd = [sys.executable, str(Path(__file__).resolve()), "--serve-bare", str(port)]
        print("(a') plain ASGI callable on uvicorn, no Starlette, 1 process ...", flush=True)
        load, rss, _, cpu = drive(
            args, f"raw{suffix}", [*cmd, "--serve-raw"], env, port, workdir, token, script
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
    for name, label, procs in targets:
        tag = f"{name}{suffix}"  # every run's bodies carry their own marker: checked apart
        with fresh_store(pg_server if name == "postgres" else None, workdir / f"{tag}.db") as (
            db_url,
            stored_ids,
        ):
            config = write_config(workdir, db_url, name)
            port = free_port()
            cmd = [
                *receiver_command(),
                "serve",
                "--config",
                str(config),
                "--port",
                str(port),
            ]
            if name != "worker":
                cmd.append("--no-worker")
            if procs != 1:
                cmd += ["--workers", str(procs)]
            print(f"{label}, {procs} process(es) ...", flush=True)
            load, rss, warm, cpu = drive(
                args, tag, cmd, env, port, workdir, token, script, database=name == "postgres"
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
    return ok_all


def summarise(results: Sequence[Result], rounds: int) -> None:
    """One line per target: medians over the rounds, and the range of the ratio."""
    print(f"\nsummary (medians over {rounds} rounds)")
    print(
        f"  {'target':<32} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
        f"{'ratio':>6} {'range':>11} {'ceiling':>8} {'RSS MiB':>8} {'PSS MiB':>8}"
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
        rss = [r.serving_rss for r in runs if r.serving_rss is not None]
        pss = [r.pss for r in runs if r.pss is not None]
        print(
            f"  {name:<32} {statistics.median(r.load.rps for r in runs):>9.0f} "
            f"{statistics.median(r.load.p50_ms for r in runs):>8.2f} "
            f"{statistics.median(r.load.p99_ms for r in runs):>8.2f} "
            f"{sum(r.load.errors for r in runs):>7} {ratio_text:>6} {spread:>11} {ceiling_text:>8} "
            f"{max(rss) if rss else float('nan'):>8.0f} {max(pss) if pss else float('nan'):>8.0f}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per target (10)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every target this many times, alternating; the summary gives medians and the "
        "median of each round's ratio (runs on one machine vary by 5-10%%)",
    )
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up (2)")
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
        "--raw",
        action="store_true",
        help="also measure a plain ASGI callable without Starlette (informative, 1 process)",
    )
    args = parser.parse_args(argv)

    if args.serve_bare:
        serve_bare(args.serve_bare, args.bare_workers, raw=args.serve_raw)
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
    print(f"server options: {SERVER_OPTIONS}")
    print(f"per target: {args.warmup:g} s warm-up, then {args.duration:g} s measured\n")

    results: list[Result] = []
    ok_all = True
    with tempfile.TemporaryDirectory(prefix="receiver-bench-") as tmp:
        workdir = Path(tmp)
        script = workdir / "bench.lua"
        script.write_text(LUA)
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
        "request); RSS: the largest "
        "peak resident set (VmHWM) among the processes serving requests, plus the largest of "
        "their writer processes', highest round; PSS: every process of the target together at "
        "the end of a run, shared pages counted once, highest round"
    )
    print(f"load generator: {generator}")
    if not ok_all:
        print("STORE CHECK FAILED: some acknowledged notifications are not in the store")
        return 1
    return 0


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


if __name__ == "__main__":
    sys.exit(main())
