"""``receiver demo``: the whole system end to end on one machine, and a summary that must add up.

Portal simulator (dispatcher + Portal API, mutual TLS)  ──HTTPS──►  receiver (ingest + worker)
        ▲                                                                │ handlers.duimp
        └──────────── Duimp queries, with the Sefaz's client certificate ┘

Everything runs in one event loop on free loopback ports, with SQLite files and TLS certificates
made in a temporary folder. The exit code is 0 only when every delivery was stored and handled,
every Duimp was fetched back, and the failure search shows the endpoint that was made to fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme
import uvicorn
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from receiver.app import create_app
from receiver.config import DispatcherSettings, Settings, load_settings
from receiver.dispatcher import run_dispatcher, serve_app
from receiver.dispatcher.duimps import duimp_number, latest_version
from receiver.dispatcher.tls import server_ssl_context
from receiver.inbox import load_result
from receiver.portal.client import PortalClient
from receiver.services import build_routing, worker_service
from receiver.sources import dedup_key
from receiver.store import NoteFilter, Store

DUIMP_EVENTS = (
    "duimp.registro",
    "duimp.retificacao",
    "duimp.entrega-com-prosseguimento",
    "duimp.entrega-sem-prosseguimento",
    "duimp.cancelamento",
    "duimp.desembaraco",
)
# The event whose extra subscriber always answers 500, so the failure search has something to show.
FAILING_EVENT = "duimp.cancelamento"
# Their handler keeps the Duimp itself, by number and version; the others keep a situation.
REGISTRATION_EVENTS = ("duimp.registro", "duimp.retificacao")


@dataclass
class DemoReport:
    emitted: int = 0
    deliveries_to_receiver: int = 0
    received: int = 0
    stored: int = 0
    handled: int = 0
    not_handled: int = 0
    duimps_kept: int = 0
    failed_deliveries: int = 0
    failure_records: int = 0
    expected_failure_records: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.set_inheritable(True)
    return sock


@contextlib.asynccontextmanager
async def _serve_receiver(app: Starlette, cert: Path) -> AsyncIterator[str]:
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


def write_demo_certificates(folder: Path) -> dict[str, Path]:
    ca = trustme.CA(organization_name="Demo ICP-Brasil (test only)")
    server = ca.issue_cert("127.0.0.1", "localhost")
    sefaz = ca.issue_cert("sefaz-demo.example", common_name="Sefaz Demo", organization_name="Sefaz")
    paths = {
        "ca": folder / "ca.pem",
        "server": folder / "server.pem",
        "client_cert": folder / "sefaz-cert.pem",
        "client_key": folder / "sefaz-key.pem",
    }
    ca.cert_pem.write_to_path(str(paths["ca"]))
    server.private_key_and_cert_chain_pem.write_to_path(str(paths["server"]))
    for blob in sefaz.cert_chain_pems:
        blob.write_to_path(str(paths["client_cert"]), append=True)
    sefaz.private_key_pem.write_to_path(str(paths["client_key"]))
    return paths


def demo_receiver_settings(folder: Path, certs: dict[str, Path], portal_url: str) -> Settings:
    (folder / "allowlist.yaml").write_text(
        "# The demo's Portal sends from loopback.\npucomex: [127.0.0.1, '::1']\n"
    )
    config = {
        "database_url": "sqlite:///receiver.db",
        "allowlist": "allowlist.yaml",
        # Like the real Portal: address check only, no credentials on its deliveries.
        "sources": {"pucomex": {"credentials": []}},
        "handlers": ["handlers.duimp"],
        "retry": {"max_attempts": 5, "backoff_seconds": 0.2},
        "worker": {"poll_interval_seconds": 0.05, "concurrency": 16},
        "portal": {
            "base_url": portal_url,
            "role_type": "SEFAZ",
            "cert_file": str(certs["client_cert"]),
            "key_file": str(certs["client_key"]),
            "ca_file": str(certs["ca"]),
        },
        "log_level": "WARNING",
    }
    path = folder / "receiver.yaml"
    path.write_text(yaml.safe_dump(config))
    return load_settings(path)


def demo_events(count: int) -> list[tuple[str, dict[str, Any]]]:
    """A realistic mix: every Duimp registered, some rectified, most cleared, a few cancelled."""
    events: list[tuple[str, dict[str, Any]]] = []
    for sequence in range(1, count + 1):
        numero = duimp_number(7000 + sequence, year=26)
        latest = latest_version(numero)
        events.append(("duimp.registro", {"numero": numero, "versao": "1"}))
        if latest > 1:
            events.append(("duimp.retificacao", {"numero": numero, "versao": str(latest)}))
        if sequence % 7 == 0:
            events.append(("duimp.cancelamento", {"numero": numero, "versao": str(latest)}))
        elif sequence % 3 == 0:
            events.append(
                ("duimp.entrega-com-prosseguimento", {"numero": numero, "versao": str(latest)})
            )
            events.append(("duimp.desembaraco", {"numero": numero, "versao": str(latest)}))
    return events


def _receiver_counts(store: Store) -> tuple[int, int, int, int]:
    received = handled = not_handled = originals = 0
    for row in store.notes(NoteFilter()):
        received += 1
        if row["duplicate_of"] is None:
            originals += 1
            if row["status"] == "done":
                handled += 1
            elif row["status"] in ("dead", "quarantined"):
                not_handled += 1
    return received, originals, handled, not_handled


async def run_demo(
    duimps: int = 20, say: Callable[[str], None] = print, patience_seconds: float = 120.0
) -> DemoReport:
    report = DemoReport()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="receiver-demo-") as tmp:
        folder = Path(tmp)
        certs = write_demo_certificates(folder)
        say(f"folder {folder}: certificates made (test CA, server, Sefaz client)")
        simulator_settings = Settings(
            dispatcher=DispatcherSettings(
                database_url=f"sqlite:///{folder / 'dispatcher.db'}",
                interval_seconds=0.3,  # the Portal waits 5 minutes between attempts
                # Past 8, a burst goes slower, not faster: httpx's pool checks every connection
                # it holds on each request (e2e at 3,000: 4: 64 s, 8: 50 s, 16: 51 s, 32: 56 s).
                per_endpoint_concurrency=8,
                allowed_networks=["127.0.0.0/8", "::1/128"],
                tls_cert_file=certs["server"],
                tls_ca_file=certs["ca"],
                outbound_ca_file=certs["ca"],
            )
        )
        async with run_dispatcher(simulator_settings) as simulator:
            say(f"Portal simulator on {simulator.url} (subscription API, Portal API, mutual TLS)")
            settings = demo_receiver_settings(folder, certs, simulator.url)
            store = Store.from_settings(settings)
            app = create_app(
                settings,
                store=store,
                background=[worker_service(settings, store, build_routing(settings))],
            )
            assert settings.portal is not None
            failing = _failing_endpoint()
            failing_tls = server_ssl_context(certs["server"], client_certs="none")
            async with (
                _serve_receiver(app, certs["server"]) as receiver_url,
                serve_app(failing, ssl_context=failing_tls) as broken,
                PortalClient(settings.portal) as portal,
            ):
                say(f"receiver on {receiver_url} (SQLite, in-process worker, handlers.duimp)")
                for evento in DUIMP_EVENTS:
                    await portal.subscriptions.create(
                        evento, f"{receiver_url}/webhooks/pucomex/{evento}"
                    )
                await portal.subscriptions.create(FAILING_EVENT, f"{broken.url}/sefaz/legado")
                subscriptions = await portal.subscriptions.list()
                say(
                    f"subscribed through the subscription API: {len(subscriptions)} subscriptions "
                    f"(one of them to an endpoint that always answers 500)"
                )

                events = demo_events(duimps)
                deliveries: list[int] = []
                # Emitted in waves, as a batch of registrations reaches the Portal's event manager.
                for start in range(0, len(events), 32):
                    results = await asyncio.gather(
                        *(simulator.dispatcher.emit(e, d) for e, d in events[start : start + 32])
                    )
                    deliveries.extend(i for result in results for i in result.delivery_ids)
                report.emitted = len(events)
                report.deliveries_to_receiver = len(events)
                report.expected_failure_records = (
                    sum(1 for evento, _ in events if evento == FAILING_EVENT)
                    * simulator_settings.dispatcher.attempts
                )
                say(f"emitted {len(events)} events ({len(deliveries)} deliveries)")
                states = await simulator.dispatcher.wait_for(deliveries, within=patience_seconds)
                report.failed_deliveries = sum(1 for s in states if s.status != "delivered")
                say(
                    f"every delivery settled: {len(states) - report.failed_deliveries} delivered, "
                    f"{report.failed_deliveries} failed (to the endpoint answering 500)"
                )

                deadline = time.monotonic() + patience_seconds
                while True:
                    received, originals, handled, not_handled = await asyncio.to_thread(
                        _receiver_counts, store
                    )
                    say(f"  receiver: {received} received, {handled}/{originals} handled")
                    if handled + not_handled >= report.deliveries_to_receiver:
                        break
                    if time.monotonic() > deadline:
                        report.problems.append(
                            f"handlers did not finish within {patience_seconds:.0f} s"
                        )
                        break
                    await asyncio.sleep(0.5)
                report.received, report.stored = received, originals
                report.handled, report.not_handled = handled, not_handled
                report.duimps_kept = await asyncio.to_thread(_kept_duimps, store, events)
                records = await portal.subscriptions.failures()
                report.failure_records = sum(1 for r in records if r.evento == FAILING_EVENT)
                # Senders hang up first: a TLS server shutting down waits for its peers' goodbye.
                await simulator.dispatcher.close()
            store.close()
    report.seconds = time.monotonic() - started
    _check(report)
    return report


def _kept_duimps(store: Store, events: list[tuple[str, dict[str, Any]]]) -> int:
    # Situation records are keyed by their notification's idempotency key: each stored original
    # found once, by event and Duimp number, in one pass (a scan per event was quadratic).
    situation_keys: dict[tuple[str | None, str], str] = {}
    for row in store.notes(NoteFilter()):
        if row["duplicate_of"] is None and row["event"] not in REGISTRATION_EVENTS:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                numero = json.loads(row["body"])["dados"]["numero"]
                situation_keys[(row["event"], str(numero))] = dedup_key("pucomex", row["body"])
    kept = 0
    for evento, dados in events:
        if evento in REGISTRATION_EVENTS:
            value = load_result(store, "duimp", f"{dados['numero']}:{dados['versao']}")
            kept += value is not None and value.get("numeroDeclaracao") == dados["numero"]
        else:
            body_key = situation_keys.get((evento, dados["numero"]))
            kept += (
                body_key is not None and load_result(store, "duimp-situacao", body_key) is not None
            )
    return kept


def _check(report: DemoReport) -> None:
    expected = report.deliveries_to_receiver
    if report.stored != expected:
        report.problems.append(f"stored {report.stored} notifications, expected {expected}")
    if report.handled != expected:
        report.problems.append(f"handled {report.handled} notifications, expected {expected}")
    if report.duimps_kept != report.emitted:
        report.problems.append(
            f"kept {report.duimps_kept} Duimp records, expected {report.emitted}"
        )
    if report.failure_records != report.expected_failure_records:
        report.problems.append(
            f"failure search found {report.failure_records} records for the failing endpoint, "
            f"expected {report.expected_failure_records}"
        )


def summary(report: DemoReport) -> str:
    rows = [
        ("events emitted by the Portal simulator", report.emitted),
        ("notifications received by the receiver", report.received),
        ("stored (originals, acknowledged with 200)", report.stored),
        ("handled by handlers.duimp", report.handled),
        ("Duimp records fetched back and kept", report.duimps_kept),
        ("failed deliveries (endpoint answering 500)", report.failed_deliveries),
        ("failure records found by the failure search", report.failure_records),
    ]
    width = max(len(label) for label, _ in rows)
    lines = [f"{label:<{width}}  {value:>6}" for label, value in rows]
    lines.append(f"{'seconds':<{width}}  {report.seconds:>6.1f}")
    lines.append("RESULT: " + ("ok" if report.ok else "FAILED: " + "; ".join(report.problems)))
    return "\n".join(lines)
