"""Dispatcher throughput: deliveries per second to a bare HTTPS endpoint answering 200.

    .venv/bin/python loadtests/dispatch_bench.py [--deliveries 20000] [--rounds 3]
        [--concurrency 16] [--postgres postgresql://postgres@127.0.0.1:5432/bench]

The endpoint is a plain ASGI app on uvicorn (httptools, TLS with a trustme certificate) in a
process of its own, so it has the other core. Each round runs, in alternation on the same
endpoint:

- ``bare``: one ``httpx.AsyncClient`` POSTing the same number of 1 KiB bodies with the same
  concurrency and keep-alive, no store: the HTTP client as a team would write it;
- ``bare pooled``: the same through ``receiver.outbound.PooledTransport`` (the dispatcher's
  transport without its guard): the ceiling of the HTTP part of a delivery on this machine;
- ``dispatcher`` (SQLite, and PostgreSQL with ``--postgres``): the deliveries are first written to
  a fresh outbox (not timed), then a ``Dispatcher`` sends them (timed from its start until the
  store says all are delivered), through the SSRF guard, the 3.5 s deadline and the 3-attempt rule.

Then the store check: every delivery delivered, after exactly one attempt, and the endpoint
received each body once. The machine may be shared: compare the ratios to ``bare`` of one run,
not absolute figures across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import trustme
from sqlalchemy import func, select, text

from receiver.dispatcher import Dispatcher, DispatcherSettings, DispatchStore
from receiver.dispatcher.records import EmitRequest
from receiver.dispatcher.schema import DISPATCH_SCHEMA
from receiver.dispatcher.tables import DELIVERIES, DISPATCH_TABLES, DeliveryStatus
from receiver.dispatcher.validation import SubscriptionInput
from receiver.outbound import PooledTransport
from receiver.store.tables import utcnow

BODY = b'{"evento":"dimp-registro-import","dados":{"pad":"' + b"x" * 970 + b'"}}'
EVENTO = "dimp-registro-import"
LOOPBACK = ["127.0.0.0/8", "::1/128"]


# --- the endpoint: its own process -------------------------------------------------------------


def endpoint_app() -> Any:
    """Answers 200 to anything after reading the body; GET /count says how many POSTs arrived."""
    posts = [0]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        if scope["method"] == "POST":
            posts[0] += 1
            body = b""
        else:
            body = str(posts[0]).encode()
        headers = [(b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def serve_endpoint(port: int, cert: str, key: str) -> None:
    import uvicorn

    uvicorn.run(
        endpoint_app(),
        host="127.0.0.1",
        port=port,
        http="httptools",
        lifespan="off",
        log_config=None,
        access_log=False,
        ssl_certfile=cert,
        ssl_keyfile=key,
        timeout_keep_alive=30,
    )


@dataclass(frozen=True)
class Endpoint:
    url: str
    ca_file: Path
    process: subprocess.Popen[bytes]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def endpoint(folder: Path) -> Iterator[Endpoint]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_file, chain, key = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(chain))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(chain), append=True)
    cert.private_key_pem.write_to_path(str(key))
    port = free_port()
    command = [sys.executable, __file__, "--serve-endpoint", str(port), str(chain), str(key)]
    process = subprocess.Popen(command)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            time.sleep(0.05)
        yield Endpoint(f"https://127.0.0.1:{port}", ca_file, process)
    finally:
        process.terminate()
        process.wait(10)


async def posts_received(target: Endpoint) -> int:
    async with httpx.AsyncClient(verify=str(target.ca_file)) as client:
        return int((await client.get(target.url + "/count")).text)


# --- the runs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    name: str
    deliveries: int
    seconds: float
    cpu_seconds: float
    problems: tuple[str, ...] = ()

    @property
    def rate(self) -> float:
        return self.deliveries / self.seconds

    @property
    def cpu_us(self) -> float:
        return self.cpu_seconds / self.deliveries * 1e6


def cpu_now() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_bare(
    target: Endpoint, count: int, concurrency: int, *, pooled: bool = False
) -> Result:
    before_posts = await posts_received(target)
    if pooled:
        context = ssl.create_default_context(cafile=str(target.ca_file))
        transport = PooledTransport(ssl_context=context, max_connections=concurrency)
        client = httpx.AsyncClient(transport=transport)
    else:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        client = httpx.AsyncClient(verify=str(target.ca_file), limits=limits)
    async with client:
        remaining = iter(range(count))
        failures = [0]

        async def sender() -> None:
            for _ in remaining:
                response = await client.post(target.url + "/hook", content=BODY)
                failures[0] += response.status_code != 200

        cpu, began = cpu_now(), time.monotonic()
        await asyncio.gather(*(sender() for _ in range(concurrency)))
        seconds, cpu = time.monotonic() - began, cpu_now() - cpu
    got = await posts_received(target) - before_posts
    problems = [f"{failures[0]} answers were not 200"] if failures[0] else []
    if got != count:
        problems.append(f"the endpoint received {got} POSTs, expected {count}")
    return Result("bare pooled" if pooled else "bare", count, seconds, cpu, tuple(problems))


def fresh_outbox(url: str) -> None:
    store = DispatchStore(url)
    try:
        cascade = " CASCADE" if store.engine.dialect.name == "postgresql" else ""
        with store.engine.begin() as conn:
            # The tables and the version table that says where their schema stands.
            for table in reversed(DISPATCH_TABLES):
                conn.execute(text(f"DROP TABLE IF EXISTS {table.name}{cascade}"))
            conn.execute(text(f"DROP TABLE IF EXISTS {DISPATCH_SCHEMA.version_table}"))
        store.upgrade_schema()
    finally:
        store.close()


def fill_outbox(url: str, target: Endpoint, count: int) -> None:
    store = DispatchStore(url)
    try:
        store.upgrade_schema()
        data = SubscriptionInput(EVENTO, target.url + "/hook", None)
        store.add_subscription("bench", data, utcnow())
        for start in range(0, count, 500):
            now = utcnow()
            store.record_events(
                [EmitRequest(EVENTO, BODY, "application/json", now)] * min(500, count - start)
            )
    finally:
        store.close()


def delivered(store: DispatchStore) -> tuple[int, int, int]:
    """Deliveries delivered, all deliveries, and the most attempts any of them took."""
    with store.engine.connect() as conn:
        done = conn.execute(
            select(func.count()).where(DELIVERIES.c.status == DeliveryStatus.DELIVERED)
        ).scalar_one()
        total = conn.execute(select(func.count()).select_from(DELIVERIES)).scalar_one()
        most = conn.execute(select(func.max(DELIVERIES.c.attempts))).scalar_one()
    return done, total, most or 0


async def run_dispatcher(
    name: str, url: str, target: Endpoint, count: int, concurrency: int
) -> Result:
    await asyncio.to_thread(fresh_outbox, url)
    await asyncio.to_thread(fill_outbox, url, target, count)
    before_posts = await posts_received(target)
    settings = DispatcherSettings(
        database_url=url,
        per_endpoint_concurrency=concurrency,
        allowed_networks=LOOPBACK,
        outbound_ca_file=target.ca_file,
        poll_seconds=0.2,
    )
    store = DispatchStore(url)
    problems: list[str] = []
    try:
        cpu, began = cpu_now(), time.monotonic()
        async with Dispatcher(settings, store):
            while True:
                done, total, most = await asyncio.to_thread(delivered, store)
                if done == total:
                    break
                if time.monotonic() - began > 600:
                    problems.append(f"only {done} of {total} delivered after 600 s")
                    break
                await asyncio.sleep(0.05)
            seconds, cpu = time.monotonic() - began, cpu_now() - cpu
        done, total, most = await asyncio.to_thread(delivered, store)
    finally:
        await asyncio.to_thread(store.close)
    got = await posts_received(target) - before_posts
    if total != count or done != count:
        problems.append(f"{done} of {total} delivered, {count} emitted")
    if most != 1:
        problems.append(f"a delivery took {most} attempts")
    if got != count:
        problems.append(f"the endpoint received {got} POSTs, expected {count}")
    return Result(name, count, seconds, cpu, tuple(problems))


def show(result: Result, bare: Result | None) -> None:
    ratio = f"  {result.rate / bare.rate:5.2f} of bare" if bare is not None else ""
    check = "store check OK" if not result.problems else "FAILED: " + "; ".join(result.problems)
    print(
        f"  {result.name:18} {result.rate:8.0f} deliveries/s  {result.seconds:6.2f} s  "
        f"{result.cpu_us:5.0f} us CPU (this process) per delivery{ratio}  {check}",
        flush=True,
    )


async def main_async(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="dispatch-bench-") as tmp:
        folder = Path(tmp)
        targets = [("dispatcher sqlite", f"sqlite:///{folder / 'dispatcher.db'}")]
        if args.postgres:
            targets.append(("dispatcher postgres", args.postgres))
        results: dict[str, list[Result]] = {}
        with endpoint(folder) as target:
            await run_bare(target, min(args.deliveries, 2000), args.concurrency)  # warm up
            for number in range(1, args.rounds + 1):
                print(f"round {number} (load average {os.getloadavg()[0]:.2f})", flush=True)
                bare = await run_bare(target, args.deliveries, args.concurrency)
                show(bare, None)
                results.setdefault("bare", []).append(bare)
                pooled = await run_bare(target, args.deliveries, args.concurrency, pooled=True)
                show(pooled, bare)
                results.setdefault("bare pooled", []).append(pooled)
                for name, url in targets:
                    result = await run_dispatcher(
                        name, url, target, args.deliveries, args.concurrency
                    )
                    show(result, bare)
                    results.setdefault(name, []).append(result)
    print(
        f"\nsummary: {args.deliveries} deliveries of {len(BODY)} bytes, per_endpoint_concurrency="
        f"{args.concurrency}, {args.rounds} alternating rounds, {os.cpu_count()} cores"
    )
    failed = False
    bare_rates = [r.rate for r in results["bare"]]
    for name, runs in results.items():
        rates = sorted(r.rate for r in runs)
        ratios = sorted(r.rate / b for r, b in zip(runs, bare_rates, strict=True))
        failed |= any(r.problems for r in runs)
        print(
            f"  {name:18} median {rates[len(rates) // 2]:6.0f} deliveries/s "
            f"(min {rates[0]:.0f}, max {rates[-1]:.0f}), median {ratios[len(ratios) // 2]:.2f} "
            f"of bare, {sorted(r.cpu_us for r in runs)[len(runs) // 2]:.0f} us CPU per delivery"
        )
    print("RESULT:", "FAILED (see the store checks above)" if failed else "every store check OK")
    return 1 if failed else 0


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--serve-endpoint":
        serve_endpoint(int(sys.argv[2]), sys.argv[3], sys.argv[4])
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--deliveries", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16, help="per_endpoint_concurrency")
    parser.add_argument("--postgres", help="a PostgreSQL URL whose dispatch tables may be dropped")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
