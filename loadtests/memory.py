"""Peak memory of `receiver serve` and its writer process while the store stalls (issue 16, #4).

Each case starts a real ``receiver serve --no-worker`` (writer process, 1 MiB body limit), stalls
its store, sends many large requests at once while it is stalled, lets the store go again, checks
that requests are answered 200 again, and prints the peak resident memory (VmHWM) of the serving
process and of its writer, and their resident memory (VmRSS) at the end.

    .venv/bin/python loadtests/memory.py                  # SQLite: writer stopped, write lock held
    .venv/bin/python loadtests/memory.py --postgres postgresql://postgres@127.0.0.1:5432/DB
                                              # + PostgreSQL: writer stopped, table locked
    .venv/bin/python loadtests/memory.py --requests 700 --body-bytes 1000000 --only stopped-writer

Cases:

- ``stopped-writer``: the writer process is stopped (SIGSTOP, as a stalled machine would), then
  let go (SIGCONT);
- ``locked-sqlite``: another connection holds SQLite's write lock (BEGIN IMMEDIATE);
- ``locked-table`` (PostgreSQL): another connection holds ``LOCK TABLE notifications IN ACCESS
  EXCLUSIVE MODE``.

``--postgres`` names a database the script may empty: it drops the receiver's tables first. The
requests all go at once (``--concurrency``, default: all of them), one connection each, each body
unique. A request that is answered before its body was sent whole may see its connection reset;
those are counted apart. This is a measuring tool, not a test: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TOKEN_ENV = "MEMORY_PUCOMEX_TOKEN"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(folder: Path, database_url: str, extra: list[str]) -> Path:
    allowlist = folder / "allowlist.yaml"
    allowlist.write_text("pucomex: [127.0.0.1]\nsintegre: [127.0.0.1]\ninvoicy: [127.0.0.1]\n")
    config = folder / "receiver.yaml"
    lines = [
        f"database_url: {json.dumps(database_url)}",
        f"allowlist: {json.dumps(str(allowlist))}",
        "max_body_bytes: 1048576",
        "log_level: WARNING",
        "sources:",
        "  pucomex:",
        "    credentials:",
        f"      - {{type: bearer, token: env:{TOKEN_ENV}}}",
        "handlers: []",
        *extra,
        "",
    ]
    config.write_text("\n".join(lines))
    return config


def status_of(pid: int) -> dict[str, int]:
    """VmHWM and VmRSS of ``pid``, in KiB."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            found[key] = int(value.split()[0])
    return found


def writer_of(pid: int, seconds: float = 20) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            if b"receiver.store.process" in Path(f"/proc/{child}/cmdline").read_bytes():
                return int(child)
        time.sleep(0.05)
    raise RuntimeError("no writer process found")


class Server:
    def __init__(self, folder: Path, database_url: str, extra: list[str]) -> None:
        self.port = free_port()
        self.admin = free_port()  # /readyz is on the admin listener
        self.token = secrets.token_hex(16)
        config = write_config(folder, database_url, extra)
        receiver = Path(sys.executable).parent / "receiver"
        self.log = folder / "serve.log"
        with self.log.open("wb") as output:
            command = [str(receiver), "serve", "--no-worker", "--config", str(config)]
            command += ["--admin-listen", f"127.0.0.1:{self.admin}"]
            self.process = subprocess.Popen(
                [*command, "--port", str(self.port)],
                env={**os.environ, TOKEN_ENV: self.token},
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=folder,
            )
        self.wait_ready()
        self.writer = writer_of(self.process.pid)

    def wait_ready(self, seconds: float = 30) -> float:
        began = time.monotonic()
        while time.monotonic() - began < seconds:
            if self.process.poll() is not None:
                raise RuntimeError(f"receiver exited with {self.process.returncode}")
            with contextlib.suppress(OSError):
                if asyncio.run(get(self.admin, "/readyz")) == "200":
                    return time.monotonic() - began
            time.sleep(0.05)
        raise RuntimeError("receiver not ready")

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.writer, signal.SIGCONT)
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


async def get(port: int, path: str) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n".encode())
        line = await asyncio.wait_for(reader.readline(), 5)
        return line.split()[1].decode() if line else "closed"
    finally:
        writer.close()


async def post(port: int, token: str, parts: tuple[bytes, ...], seconds: float) -> str:
    """One request on its own connection: its status ("503+retry-after" for a proper 503), or
    the name of what went wrong on the connection (a server that closes a connection with the
    body unread resets it, and the answer may be lost)."""
    length = sum(len(part) for part in parts)
    head = (
        "POST /webhooks/pucomex HTTP/1.1\r\nHost: m\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"  # keep-alive, as senders do: the rest is read
    ).encode()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
    except (OSError, TimeoutError) as error:
        return f"connect:{type(error).__name__}"
    try:
        writer.write(head)
        with contextlib.suppress(OSError):  # answered before the body went: read the answer
            for part in parts:
                writer.write(part)
            await asyncio.wait_for(writer.drain(), seconds)
        line = await asyncio.wait_for(reader.readline(), seconds)
        if not line:
            return "closed"
        status = line.split()[1].decode()
        headers = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), seconds)
        if status == "503" and b"retry-after:" in headers.lower():
            return "503+retry-after"
        return status
    except (OSError, TimeoutError, asyncio.IncompleteReadError) as error:
        return type(error).__name__
    finally:
        writer.close()


async def burst(
    port: int, token: str, requests: int, body_bytes: int, concurrency: int, seconds: float
) -> tuple[Counter[str], float]:
    run = secrets.token_hex(4)
    prefix = b'{"evento":"duimp.registro","pad":"' + b"x" * max(0, body_bytes - 64) + b'","n":"'
    slots = asyncio.Semaphore(concurrency)

    async def one(n: int) -> str:
        async with slots:
            return await post(port, token, (prefix, b'%s-%d"}' % (run.encode(), n)), seconds)

    began = time.monotonic()
    answers = await asyncio.gather(*(one(n) for n in range(requests)))
    return Counter(answers), time.monotonic() - began


def stopped_writer(server: Server) -> Callable[[], None]:
    os.kill(server.writer, signal.SIGSTOP)
    return lambda: os.kill(server.writer, signal.SIGCONT)


def locked_sqlite(path: Path) -> Callable[[Server], Callable[[], None]]:
    def stall(server: Server) -> Callable[[], None]:
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")

        def release() -> None:
            holder.execute("ROLLBACK")
            holder.close()

        return release

    return stall


def locked_table(url: str) -> Callable[[Server], Callable[[], None]]:
    def stall(server: Server) -> Callable[[], None]:
        import psycopg

        holder = psycopg.connect(url)
        holder.execute("LOCK TABLE notifications IN ACCESS EXCLUSIVE MODE")

        def release() -> None:
            holder.rollback()
            holder.close()

        return release

    return stall


@contextlib.contextmanager
def postgres_emptied(url: str) -> Iterator[str]:
    import psycopg

    def drop() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            for table in ("jobs", "handler_results", "notifications"):
                conn.execute(f"DROP TABLE IF EXISTS {table} CASCADE")

    drop()
    try:
        yield url
    finally:
        drop()


def run_case(
    name: str,
    database_url: str,
    stall: Callable[[Server], Callable[[], None]],
    args: argparse.Namespace,
    folder: Path,
) -> dict[str, Any]:
    server = Server(folder, database_url, args.config)
    try:
        release = stall(server)
        try:
            answers, seconds = asyncio.run(
                burst(
                    server.port,
                    server.token,
                    args.requests,
                    args.body_bytes,
                    args.concurrency or args.requests,
                    args.timeout,
                )
            )
            during = {"serving": status_of(server.process.pid)}
        finally:
            release()
        recovered = server.wait_ready()
        after = asyncio.run(burst(server.port, server.token, 20, 1024, 1, 10))[0]
        time.sleep(1.0)
        peak = {"serving": status_of(server.process.pid), "writer": status_of(server.writer)}
    finally:
        server.stop()
    return {
        "case": name,
        "answers during the stall": dict(answers),
        "burst seconds": round(seconds, 2),
        "ready again after (s)": round(recovered, 2),
        "answers after": dict(after),
        "serving peak MiB": round(peak["serving"]["VmHWM"] / 1024, 1),
        "writer peak MiB": round(peak["writer"]["VmHWM"] / 1024, 1),
        "serving RSS at the end of the stall MiB": round(during["serving"]["VmRSS"] / 1024, 1),
        "serving RSS after MiB": round(peak["serving"]["VmRSS"] / 1024, 1),
        "writer RSS after MiB": round(peak["writer"]["VmRSS"] / 1024, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=700)
    parser.add_argument("--body-bytes", type=int, default=1_000_000)
    parser.add_argument("--concurrency", type=int, default=0, help="0: all requests at once")
    parser.add_argument("--timeout", type=float, default=30.0, help="per request, seconds")
    parser.add_argument("--postgres", metavar="URL", help="also run the PostgreSQL cases there")
    parser.add_argument("--only", default="", help="comma-separated case names")
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="LINE",
        help="an extra line of receiver.yaml, e.g. 'max_inflight_bytes: 33554432' (repeatable)",
    )
    args = parser.parse_args(argv)
    wanted = set(filter(None, args.only.split(",")))
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="receiver-memory-") as temp:
        root = Path(temp)
        cases: list[tuple[str, str, Callable[[Server], Callable[[], None]]]] = []
        for name in ("stopped-writer", "locked-sqlite"):
            folder = root / f"sqlite-{name}"
            folder.mkdir()
            db = folder / "receiver.db"
            stall = stopped_writer if name == "stopped-writer" else locked_sqlite(db)
            cases.append((f"{name} (SQLite)", f"sqlite:///{db}", stall))
        if args.postgres:
            cases.append(("stopped-writer (PostgreSQL)", args.postgres, stopped_writer))
            cases.append(("locked-table (PostgreSQL)", args.postgres, locked_table(args.postgres)))
        for label, url, stall in cases:
            if wanted and label.split(" ")[0] not in wanted:
                continue
            folder = root / label.replace(" ", "-").replace("(", "").replace(")", "")
            folder.mkdir(exist_ok=True)
            print(f"{label}: {args.requests} x {args.body_bytes} bytes ...", flush=True)
            with contextlib.ExitStack() as stack:
                if url.startswith("postgresql"):
                    stack.enter_context(postgres_emptied(url))
                result = run_case(label, url, stall, args, folder)
            results.append(result)
            for key, value in result.items():
                print(f"  {key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
