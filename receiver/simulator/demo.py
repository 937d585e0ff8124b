"""``receiver demo``: the whole system end to end on one machine, and a summary that must add up.

Portal simulator (dispatcher + Portal API, mutual TLS)  ──HTTPS──►  receiver (ingest + worker)
        ▲                                                                │ handlers.duimp
        └──────────── Duimp queries, with the Sefaz's client certificate ┘

Everything runs in one event loop on free loopback ports, with SQLite files and TLS certificates
made in a temporary folder (``loadtests/e2e.py`` runs the receiver as ``receiver serve`` in a
process of its own instead: ``run_demo(separate_process=True)``). The receiver is configured as the README says (the allowlist and the
``secret`` header credential on ``pucomex``), its subscriptions carry a ``chaveSecreta``, and the
simulator delivers as the Portal does: the published event ids in ``event-type``, the secret in
``secret``, no ``Authorization``, the production Duimp body. The exit code is 0 only when every
delivery was stored and handled, every Duimp was fetched back, the consultation answers the
situation of each Duimp's last event, and the failure search shows the endpoint made to fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from receiver.config import Settings, load_settings
from receiver.dispatcher import Dispatcher, serve_app
from receiver.dispatcher.portal_events import PUBLISHED_DUIMP_EVENTS
from receiver.dispatcher.tls import server_ssl_context
from receiver.ingest.app import ReceiverApp, create_app
from receiver.portal.client import PortalClient
from receiver.runtime.services import build_routing, worker_service
from receiver.simulator.app import loopback_settings, run_simulator
from receiver.simulator.certificates import write_demo_certificates
from receiver.simulator.demo_report import (
    DemoReport,
    check,
    kept_duimps,
    latencies,
    moment_key,
    receiver_counts,
    summary,
)
from receiver.simulator.duimps import duimp_number, latest_version
from receiver.store import Store
from receiver.store.schema import RECEIVER_SCHEMA

__all__ = [
    "DemoReport",
    "demo_events",
    "demo_receiver_settings",
    "demo_stories",
    "run_demo",
    "serve_receiver",
    "summary",
]

# The event whose extra subscriber always answers 500, so the failure search has something to show.
FAILING_EVENT = "dimp-diag-import"
CHAVE_VARIABLE = "PUCOMEX_CHAVE_SECRETA"
Story = list[tuple[str, dict[str, Any]]]
START_SECONDS = 60  # for `receiver serve` to answer /readyz (about 1 s here)


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.set_inheritable(True)
    return sock


def _free_port() -> int:
    """A port no one listens on now, for a server in another process to bind."""
    with _free_socket() as sock:
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def serve_receiver(app: ReceiverApp, cert: Path) -> AsyncIterator[str]:
    """The receiver app on uvicorn with its lifespan (store, worker), as ``receiver serve`` runs it."""
    sock = _free_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        ssl_certfile=str(cert),
        proxy_headers=False,
        server_header=False,
        log_config=None,
        access_log=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("the receiver stopped while starting")
            await asyncio.sleep(0.01)
        yield f"https://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=30)
        sock.close()


def _failing_endpoint() -> Starlette:
    async def refuse(request: Request) -> Response:
        await request.body()
        return JSONResponse({"erro": "sistema indisponível"}, status_code=500)

    return Starlette(routes=[Route("/{path:path}", refuse, methods=["POST"])])


@contextlib.contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            del os.environ[name]
        else:
            os.environ[name] = previous


def demo_receiver_settings(
    folder: Path,
    certs: dict[str, Path],
    portal_url: str,
    chave_secreta: str | None = None,
    *,
    handlers: Sequence[str] = ("handlers.duimp",),
    log_level: str = "WARNING",
) -> Settings:
    """The receiver.yaml of the README: the Portal's chaveSecreta (read from
    $PUCOMEX_CHAVE_SECRETA, a random one unless given) checked in the `secret` header, and given
    at subscription. ``receiver dev`` gives its own handler modules and log level."""
    (folder / "allowlist.yaml").write_text(
        "# The demo's Portal sends from loopback.\npucomex: [127.0.0.1, '::1']\n"
    )
    config = {
        "database_url": "sqlite:///receiver.db",
        "allowlist": "allowlist.yaml",
        # As the README says: the allowlist, and the chaveSecreta the Portal sends in `secret`.
        "sources": {
            "pucomex": {
                "credentials": [
                    {"type": "header", "name": "secret", "value": f"env:{CHAVE_VARIABLE}"}
                ]
            }
        },
        "handlers": list(handlers),
        "store_dir": "data",
        "retry": {"max_attempts": 5, "backoff_seconds": 0.2},
        "worker": {"poll_interval_seconds": 0.05, "concurrency": 16},
        "portal": {
            "base_url": portal_url,
            "role_type": "SEFAZ",
            "cert_file": str(certs["client_cert"]),
            "key_file": str(certs["client_key"]),
            "ca_file": str(certs["ca"]),
            "chave_secreta": f"env:{CHAVE_VARIABLE}",
            "watch_every_seconds": 0,
        },
        "log_level": log_level,
    }
    path = folder / "receiver.yaml"
    path.write_text(yaml.safe_dump(config))
    with _environment(CHAVE_VARIABLE, chave_secreta or secrets.token_hex(16)):
        return load_settings(path)


def demo_stories(count: int) -> list[Story]:
    """Each Duimp's events in order, with the Portal's ids and situations: registered, sometimes
    rectified or diagnosed, selected for a channel, cleared, and often delivered."""
    stories: list[Story] = []
    for sequence in range(1, count + 1):
        numero = duimp_number(7000 + sequence, year=26)
        latest = latest_version(numero)
        ident = {"numero": numero, "versao": latest}
        story: Story = [("dimp-registro-import", {"numero": numero, "versao": 1})]
        if latest > 1:
            story.append(("dimp-retifica-import", dict(ident)))
        if sequence % 5 == 0:
            story.append(("dimp-diag-import", dict(ident)))
        canal = {0: "VERMELHO", 3: "AMARELO"}.get(sequence % 6, "VERDE")
        if canal != "VERDE":
            story.append(
                (
                    "dimp-situacao-import",
                    {**ident, "situacaoDuimp": "EM_CONFERENCIA_SELECIONADA", "canal": canal},
                )
            )
        situations = ["DESEMBARACADA_AGUARDANDO_ENTREGA_CARGA"]
        if sequence % 2 == 0:
            situations.append("DESEMBARACADA_CARGA_ENTREGUE")
        elif sequence % 7 == 0 and canal == "VERDE":
            situations = ["ENTREGA_ANTECIPADA_CARGA_ENTREGUE"]
        for situacao in situations:
            story.append(
                ("dimp-situacao-import", {**ident, "situacaoDuimp": situacao, "canal": canal})
            )
        stories.append(story)
    return stories


def demo_events(count: int) -> list[tuple[str, dict[str, Any]]]:
    """Every event of ``demo_stories``, Duimp after Duimp."""
    return [event for story in demo_stories(count) for event in story]


def _last_situation(story: Story) -> str:
    situacoes = [dados["situacaoDuimp"] for _, dados in story if "situacaoDuimp" in dados]
    return situacoes[-1] if situacoes else "REGISTRADA_AGUARDANDO_CANAL"


async def _situations_matching(portal: PortalClient, stories: list[Story]) -> int:
    """Duimps whose consultation (latest version, through versoes) answers their last event's
    situation."""
    matching = 0
    for start in range(0, len(stories), 32):
        chunk = stories[start : start + 32]
        found = await asyncio.gather(*(portal.duimp(story[0][1]["numero"]) for story in chunk))
        matching += sum(
            duimp.get("situacaoDeclaracao") == _last_situation(story)
            for duimp, story in zip(found, chunk, strict=True)
        )
    return matching


@contextlib.asynccontextmanager
async def serve_receiver_process(
    settings: Settings, folder: Path, cert: Path, say: Callable[[str], None]
) -> AsyncIterator[str]:
    """``receiver serve --migrate`` on the demo's receiver.yaml, as users run it: its own process
    (and its writer's), so the receiver has a core of its own beside the simulator's."""
    assert settings.portal is not None and settings.portal.chave_secreta is not None
    port, admin = _free_port(), _free_port()
    environment = {
        **os.environ,
        CHAVE_VARIABLE: settings.portal.chave_secreta.get_secret_value(),
        # The handler modules import in the child as they do here (handlers.duimp, beside receiver/).
        "PYTHONPATH": os.pathsep.join(path for path in sys.path if path),
    }
    command = [
        sys.executable, "-m", "receiver", "serve", "--config", str(folder / "receiver.yaml"),
        "--port", str(port), "--admin-listen", f"127.0.0.1:{admin}",
        "--ssl-certfile", str(cert), "--ssl-keyfile", str(cert), "--migrate",
    ]  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *command, cwd=folder, env=environment, stdin=asyncio.subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + START_SECONDS
        async with httpx.AsyncClient(trust_env=False) as http:
            while True:
                if process.returncode is not None:
                    raise RuntimeError(f"receiver serve exited with {process.returncode}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"receiver serve was not ready within {START_SECONDS} s")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"http://127.0.0.1:{admin}/readyz")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
        say(f"receiver serve started (pid {process.pid}; its writer in a process of its own)")
        yield f"https://127.0.0.1:{port}"
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout=30)
            except TimeoutError:
                process.kill()
                await process.wait()


@contextlib.asynccontextmanager
async def _receiver(
    settings: Settings,
    folder: Path,
    cert: Path,
    separate_process: bool,
    say: Callable[[str], None],
) -> AsyncIterator[tuple[str, Store]]:
    """The receiver's URL, and its store opened here (to count and check what it holds)."""
    store = Store.from_settings(settings)
    try:
        if separate_process:
            async with serve_receiver_process(settings, folder, cert, say) as url:
                yield url, store
            return
        say(await asyncio.to_thread(_upgraded, store))
        app = create_app(
            settings,
            store=store,
            background=[worker_service(settings, store, build_routing(settings))],
        )
        async with serve_receiver(app, cert) as url:
            yield url, store
    finally:
        store.close()


async def run_demo(
    duimps: int = 20,
    say: Callable[[str], None] = print,
    patience_seconds: float = 120.0,
    *,
    separate_process: bool = False,
    per_endpoint_concurrency: int = 8,
) -> DemoReport:
    """The demo's system: ``separate_process`` runs the receiver as ``receiver serve`` (the
    end-to-end benchmark) instead of in this event loop (``receiver demo``, one process)."""
    report = DemoReport()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="receiver-demo-") as tmp:
        folder = Path(tmp)
        certs = write_demo_certificates(folder)
        say(f"folder {folder}: certificates made (test CA, server, Sefaz client)")
        # 8 in flight for the demo's few dozen events; loadtests/e2e.py gives its --concurrency.
        simulator_settings = loopback_settings(
            folder, certs, interval_seconds=0.3, per_endpoint_concurrency=per_endpoint_concurrency
        )
        async with run_simulator(simulator_settings) as simulator:
            say(f"Portal simulator on {simulator.url} (subscription API, Portal API, mutual TLS)")
            settings = demo_receiver_settings(folder, certs, simulator.url)
            assert settings.portal is not None
            failing = _failing_endpoint()
            failing_tls = server_ssl_context(certs["server"], client_certs="none")
            async with (
                _receiver(settings, folder, certs["server"], separate_process, say) as (
                    receiver_url,
                    store,
                ),
                serve_app(failing, ssl_context=failing_tls) as broken,
                PortalClient(settings.portal) as portal,
            ):
                say(
                    f"receiver on {receiver_url} (SQLite, in-process worker, handlers.duimp; "
                    "pucomex checked by address and the `secret` header)"
                )
                # One endpoint for every event: the Portal names it in the event-type header.
                for evento in PUBLISHED_DUIMP_EVENTS:
                    await portal.subscriptions.create(evento, f"{receiver_url}/webhooks/pucomex")
                await portal.subscriptions.create(FAILING_EVENT, f"{broken.url}/sefaz/legado")
                subscriptions = await portal.subscriptions.list()
                say(
                    f"subscribed with a chaveSecreta: {len(subscriptions)} subscriptions "
                    f"(one of them to an endpoint that always answers 500)"
                )
                stories = demo_stories(duimps)
                await _emit(simulator.dispatcher, stories, report, patience_seconds, say)
                report.expected_failure_records = (
                    report.by_event.get(FAILING_EVENT, [0])[0] * simulator_settings.attempts
                )
                deadline = time.monotonic() + patience_seconds
                while True:
                    received, settled = await asyncio.to_thread(receiver_counts, store, report)
                    say(
                        f"  receiver: {received} received, {report.handled}/{report.stored} handled"
                    )
                    if settled >= report.deliveries_to_receiver:
                        report.handled_seconds = time.monotonic() - started
                        break
                    if time.monotonic() > deadline:
                        report.problems.append(
                            f"handlers did not finish within {patience_seconds:.0f} s"
                        )
                        break
                    await asyncio.sleep(0.5)
                await asyncio.to_thread(latencies, store, report)
                report.duimps_kept = await asyncio.to_thread(kept_duimps, store)
                report.duimps = len(stories)
                report.situations_matching = await _situations_matching(portal, stories)
                records = await portal.subscriptions.failures()
                report.failure_records = sum(1 for r in records if r.evento == FAILING_EVENT)
                # Senders hang up first: a TLS server shutting down waits for its peers' goodbye.
                await simulator.dispatcher.close()
    report.seconds = time.monotonic() - started
    check(report)
    return report


async def _emit(
    dispatcher: Dispatcher,
    stories: list[Story],
    report: DemoReport,
    patience_seconds: float,
    say: Callable[[str], None],
) -> None:
    """Each Duimp's events in order, many Duimps at a time, then wait until all are delivered
    or failed."""
    deliveries: list[int] = []

    async def tell(story: Story) -> None:
        for evento, dados in story:
            key = moment_key(
                evento, str(dados["numero"]), str(dados.get("versao")), dados.get("situacaoDuimp")
            )
            report.emitted_at.setdefault(key, time.time())
            result = await dispatcher.emit(evento, dados)
            deliveries.extend(result.delivery_ids)
            report.by_event.setdefault(evento, [0, 0, 0])[0] += 1

    # In waves, as a batch of registrations reaches the Portal's event manager.
    for start in range(0, len(stories), 32):
        await asyncio.gather(*(tell(story) for story in stories[start : start + 32]))
    report.emitted = report.deliveries_to_receiver = sum(len(story) for story in stories)
    say(f"emitted {report.emitted} events ({len(deliveries)} deliveries)")
    states = await dispatcher.wait_for(deliveries, within=patience_seconds)
    report.failed_deliveries = sum(1 for s in states if s.status != "delivered")
    say(
        f"every delivery settled: {len(states) - report.failed_deliveries} delivered, "
        f"{report.failed_deliveries} failed (to the endpoint answering 500)"
    )


def _upgraded(store: Store) -> str:
    """``receiver demo`` is its own operator: it runs ``receiver db upgrade`` on its store."""
    return store.upgrade_schema().summary(RECEIVER_SCHEMA, store.safe_url)
