"""Helpers for the Portal and handler tests: certificates, a real HTTPS uvicorn server in a thread,
a faithful fake of the subscription API, and notifications stored and run as the worker would.
The in-memory result store is the public kit's (``receiver.testing.MemoryResults``)."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import trustme
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from receiver import Context, Notification, Router
from receiver.config import PortalSettings
from receiver.dispatcher.tls import tls_uvicorn_config
from receiver.sources import dedup_key
from receiver.store import Incoming, Store
from receiver.testing import MemoryResults, Quarantined, run_handlers
from receiver.worker.attempt import read_notification


@dataclass
class Certs:
    ca_pem: Path
    server_pem: Path
    client_pem: Path
    other_client_pem: Path


def make_certs(folder: Path) -> Certs:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("sefaz-sp@example.org", organization_name="Sefaz SP")
    other = ca.issue_cert("erp@example.org", organization_name="ERP Importadora")
    paths = Certs(
        ca_pem=folder / "ca.pem",
        server_pem=folder / "server.pem",
        client_pem=folder / "client.pem",
        other_client_pem=folder / "other.pem",
    )
    ca.cert_pem.write_to_path(str(paths.ca_pem))
    server.private_key_and_cert_chain_pem.write_to_path(str(paths.server_pem))
    client.private_key_and_cert_chain_pem.write_to_path(str(paths.client_pem))
    other.private_key_and_cert_chain_pem.write_to_path(str(paths.other_client_pem))
    return paths


def portal_settings(base_url: str, certs: Certs | None, **changes: Any) -> PortalSettings:
    values: dict[str, Any] = {"base_url": base_url, "timeout_seconds": 5, "max_retries": 2}
    if certs is not None:
        values.update(ca_file=certs.ca_pem, cert_file=certs.client_pem)
    values.update(changes)
    return PortalSettings(**values)


@contextlib.contextmanager
def serve(
    app: ASGIApp,
    ssl_context: ssl.SSLContext | None = None,
    http: str = "h11",
    host: str = "127.0.0.1",
) -> Iterator[str]:
    """Run ``app`` on a free port of ``host`` (IPv4) in a thread; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    options: dict[str, Any] = {"log_config": None, "lifespan": "off", "loop": "asyncio"}
    if ssl_context is not None:
        config = tls_uvicorn_config(
            app,
            ssl_context,
            host=host,
            port=port,
            http=http,  # type: ignore[arg-type]
            **options,
        )
        scheme = "https"
    else:
        config = uvicorn.Config(app, host=host, port=port, ws="none", **options)
        scheme = "http"
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        yield f"{scheme}://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


class StatusLog:
    """ASGI wrapper recording (method, path, status) of every answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.answers: list[tuple[str, str, int]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def recording(message: Any) -> None:
            if message["type"] == "http.response.start":
                self.answers.append((scope["method"], scope["path"], message["status"]))
            await send(message)

        await self.app(scope, receive, recording)

    def statuses(self, path_prefix: str) -> list[int]:
        return [status for _, path, status in self.answers if path.startswith(path_prefix)]


@dataclass
class FakePortal:
    """The Portal's subscription API as the seed describes it, behind ``autenticar``, for
    ``httpx.MockTransport``: the dispatcher's real one is built elsewhere."""

    failures: list[dict[str, Any]] = field(default_factory=list)
    subscriptions: dict[int, dict[str, Any]] = field(default_factory=dict)
    # Cancelled by the Portal (only failures for 30 days): id -> reason.
    cancelled: dict[int, dict[str, Any]] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    authentications: int = 0
    next_id: int = 1

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def add_subscription(self, evento: str, endpoint: str) -> int:
        sid = self.next_id
        self.next_id += 1
        self.subscriptions[sid] = {"id": sid, "evento": evento, "endpoint": endpoint}
        return sid

    def cancel(self, sid: int, reason: str = "apenas erros na entrega por 30 dias") -> None:
        self.cancelled[sid] = {**self.subscriptions.pop(sid), "motivoInativacao": reason}

    def calls(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and r.url.path == path]

    @staticmethod
    def _invalid(body: dict[str, Any]) -> str | None:
        evento, endpoint = body.get("evento"), body.get("endpoint")
        if not isinstance(evento, str) or not evento or len(evento) > 40:
            return "evento: Text(40), required"
        if not isinstance(endpoint, str) or not endpoint or len(endpoint) > 500:
            return "endpoint: Text(500), required"
        if urlsplit(endpoint).scheme != "https":
            return "endpoint: must be a secure URL (HTTPS)"
        return None

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path.startswith("/portal/api/autenticar") and request.method == "POST":
            self.authentications += 1
            return httpx.Response(
                200,
                headers={"Set-Token": f"Bearer t{self.authentications}", "X-CSRF-Token": "c"},
            )
        if request.headers.get("authorization") != f"Bearer t{self.authentications}":
            return httpx.Response(401, json={"message": "not authenticated"})
        body = json.loads(request.content) if request.content else {}
        if path == "/portal/api/ext/webhook/falhas" and request.method == "GET":
            day = (
                request.url.params.get("data")
                or body.get("data")
                or date.today().strftime("%d%m%Y")
            )
            return httpx.Response(200, json=[f for f in self.failures if f["data"] == day])
        if path == "/portal/api/ext/webhook":
            if request.method == "GET":
                listed = list(self.subscriptions.values())
                if request.url.params.get("exibirInativos") == "true":
                    listed = [{**s, "ativo": True} for s in listed]
                    listed += [{**s, "ativo": False} for s in self.cancelled.values()]
                return httpx.Response(200, json=listed)
            if request.method == "POST":
                problem = self._invalid(body)
                if problem:
                    return httpx.Response(422, json={"message": problem})
                sid = self.add_subscription(body["evento"], body["endpoint"])
                return httpx.Response(200, json=self.subscriptions[sid])
        if path.startswith("/portal/api/ext/webhook/"):
            sid = int(path.rsplit("/", 1)[1])
            if sid not in self.subscriptions:
                return httpx.Response(404, json={"message": f"subscription {sid} not found"})
            if request.method == "PUT":
                problem = self._invalid(body)
                if problem or body.get("id") != sid:
                    return httpx.Response(422, json={"message": problem or "id"})
                self.subscriptions[sid] = {
                    "id": sid,
                    "evento": body["evento"],
                    "endpoint": body["endpoint"],
                }
                return httpx.Response(200, json=self.subscriptions[sid])
            if request.method == "DELETE":
                del self.subscriptions[sid]
                return httpx.Response(200)
        return httpx.Response(404, json={"message": "no such route"})


# --- Handlers as the worker runs them ------------------------------------------------------


def stored(store: Store, source: str, payload: Any, event: str | None = None) -> Notification:
    """Store a body as ingest does, read it back, and make the Notification the worker would."""
    body = json.dumps(payload, ensure_ascii=False).encode()
    (receipt,) = store.append_now(
        [Incoming(source, event, "127.0.0.1", {}, body, dedup_key(source, body))]
    )
    row = store.note(receipt.id)
    assert row is not None
    return read_notification(
        note_id=row["id"],
        source=source,
        event=row["event"],
        received_at=row["received_at"],
        body=bytes(row["body"]),
        headers=json.loads(row["headers"]),
        dedup_key=row["dedup_key"],
    )


def context(results: MemoryResults, **fields: Any) -> Context:
    return Context(
        handler="test", attempt=1, logger=logging.getLogger("test"), results=results, **fields
    )


async def dispatch(router: Router, note: Notification, ctx: Context) -> int:
    """Run every handler of ``router`` that matches, as the worker would (the public kit's
    ``run_handlers``, with what ``ctx`` holds); how many ran. What a handler raised is raised
    again here, so a test can expect it."""
    try:
        runs = await run_handlers(
            router,
            note,
            portal=ctx.portal_client,
            results=ctx.results,
            data_dir=ctx.data_dir,
            http=ctx.http_client,
            downloads=ctx.downloads,
        )
    except Quarantined as quarantined:
        if quarantined.reason.startswith("no handler for "):
            return 0
        raise
    for run in runs:
        if run.error is not None:
            raise run.error
    return len(runs)
