"""ReceiverProtocol fed bytes by hand: the head limits at their exact boundaries, the peer gate,
the busy answer, and the uvicorn code the protocol relies on (pinned, so an upgrade that changes
it fails here first). Over real sockets: tests/acceptance/ingest/test_edge.py."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import logging
import signal
from collections.abc import Iterator
from typing import Any

import netaddr
import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState
from uvicorn.supervisors.multiprocess import SIGNALS, Multiprocess

from receiver.config import settings_from_mapping
from receiver.ingest.edge import ConnectionGate, EdgePolicy, RefusalLog
from receiver.ingest.http import ReceiverProtocol, uvicorn_config

LIMIT = 2048  # the smallest max_header_bytes allowed is 1024; small keeps the cases readable
HEADERS = 20


class Wire(asyncio.Transport):
    """The socket's side of a connection: what the server wrote, and whether it closed."""

    def __init__(self, peer: str = "203.0.113.7") -> None:
        super().__init__()
        self.peer = peer
        self.written = b""
        self.closed = False
        self.paused = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": (self.peer, 40000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def statuses(self) -> list[int]:
        return [
            int(line.split()[1]) for line in self.written.split(b"\r\n") if line[:5] == b"HTTP/"
        ]


class App:
    """Answers 200 after reading the whole body; records what it was called with."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.calls.append({"headers": scope["headers"], "body": body})
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def edge() -> Iterator[EdgePolicy]:
    policy = EdgePolicy(max_header_bytes=LIMIT, max_header_count=HEADERS, retry_after_seconds=7)
    ReceiverProtocol.configure(policy)
    yield policy
    ReceiverProtocol.configure(EdgePolicy())


def connection(
    app: App, wire: Wire, state: ServerState | None = None, limit: int | None = None
) -> ReceiverProtocol:
    config = uvicorn.Config(app, http=ReceiverProtocol, limit_concurrency=limit, log_config=None)
    config.load()
    protocol = ReceiverProtocol(
        config=config,
        server_state=state or ServerState(),
        app_state={},
        _loop=asyncio.get_running_loop(),
    )
    protocol.connection_made(wire)
    return protocol


def request(
    *headers: tuple[str, str], target: str = "/webhooks/pucomex", body: bytes = b""
) -> bytes:
    lines = [f"POST {target} HTTP/1.1", *(f"{k}: {v}" for k, v in headers)]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def counted(data: bytes) -> int:
    """The head's size by the documented rule: target + (name + value + 4) per header line."""
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    target = head[0].split(b" ")[1]
    return len(target) + sum(len(line) - 2 + 4 for line in head[1:])  # "name: value" has ": "


def padded_to(size: int, lines: int = 3) -> bytes:
    """A request whose head counts exactly ``size`` bytes, with ``lines`` header lines in all."""
    base = request(*((f"X-Pad-{n}", "") for n in range(lines - 2)), ("X-Fill", ""))
    fill = size - counted(base)
    assert fill >= 0
    return request(*((f"X-Pad-{n}", "") for n in range(lines - 2)), ("X-Fill", "f" * fill))


async def settle(wire: Wire) -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_the_rule_for_counting_a_head() -> None:
    data = request(("Host", "r"), target="/x")
    assert counted(data) == len("/x") + (4 + 1 + 4) + (14 + 1 + 4)
    assert counted(padded_to(LIMIT)) == LIMIT


@pytest.mark.parametrize(("size", "status"), [(LIMIT, 200), (LIMIT + 1, 431)])
@pytest.mark.parametrize("step", [None, 1, 7, 512])
def test_head_bytes_at_and_over_the_limit(
    edge: EdgePolicy, size: int, status: int, step: int | None
) -> None:
    async def scenario() -> tuple[App, Wire]:
        app, wire = App(), Wire()
        protocol = connection(app, wire)
        data = padded_to(size)
        for start in range(0, len(data), step or len(data)):
            protocol.data_received(data[start : start + (step or len(data))])
            if wire.closed:
                break
        await settle(wire)
        return app, wire

    app, wire = asyncio.run(scenario())
    assert wire.statuses() == [status]
    assert len(app.calls) == (1 if status == 200 else 0), "a refused head must not reach the app"
    if status == 431:
        assert wire.closed and b"connection: close" in wire.written


@pytest.mark.parametrize(("lines", "status"), [(HEADERS, 200), (HEADERS + 1, 431)])
def test_header_lines_at_and_over_the_limit(edge: EdgePolicy, lines: int, status: int) -> None:
    async def scenario() -> tuple[App, Wire]:
        app, wire = App(), Wire()
        # Content-Length is one of the lines.
        connection(app, wire).data_received(request(*((f"X-{n}", "v") for n in range(lines - 1))))
        await settle(wire)
        return app, wire

    app, wire = asyncio.run(scenario())
    assert wire.statuses() == [status]
    assert len(app.calls) == (1 if status == 200 else 0)


def test_one_endless_header_line_is_cut_off_after_the_limit_and_a_chunk(edge: EdgePolicy) -> None:
    """httptools gathers a header line whole before calling on_header: the chunks count instead."""
    chunk = 4096

    async def scenario() -> tuple[App, Wire, int]:
        app, wire = App(), Wire()
        protocol = connection(app, wire)
        fed = 0
        protocol.data_received(b"POST /webhooks/pucomex HTTP/1.1\r\nX-Endless: ")
        while not wire.closed and fed < 8 << 20:
            protocol.data_received(b"a" * chunk)
            fed += chunk
        await settle(wire)
        return app, wire, fed

    app, wire, fed = asyncio.run(scenario())
    assert wire.statuses() == [431] and app.calls == []
    assert fed <= LIMIT + chunk, f"read {fed} bytes of one header before refusing it"


def test_a_body_in_the_same_chunk_as_its_head_is_not_head(edge: EdgePolicy) -> None:
    async def scenario() -> tuple[App, Wire]:
        app, wire = App(), Wire()
        protocol = connection(app, wire)
        big = request(("Host", "r"), body=b"b" * (LIMIT * 8))
        small = request(("Host", "r"), body=b"second")
        protocol.data_received(big + small[:10])  # a pipelined head begins in the same chunk
        await settle(wire)
        protocol.data_received(small[10:])
        await settle(wire)
        return app, wire

    app, wire = asyncio.run(scenario())
    assert wire.statuses() == [200, 200]
    assert [len(call["body"]) for call in app.calls] == [LIMIT * 8, 6]


def test_each_request_of_a_connection_has_its_own_head_budget(edge: EdgePolicy) -> None:
    async def scenario() -> tuple[App, Wire]:
        app, wire = App(), Wire()
        protocol = connection(app, wire)
        for _ in range(3):
            protocol.data_received(padded_to(LIMIT, lines=HEADERS))
            await settle(wire)
        return app, wire

    app, wire = asyncio.run(scenario())
    assert wire.statuses() == [200, 200, 200] and len(app.calls) == 3


# --- Who may connect ------------------------------------------------------------------------


def gate_policy() -> EdgePolicy:
    return EdgePolicy(gate=ConnectionGate(netaddr.IPSet(["203.0.113.0/24", "::1/128"])))


@pytest.mark.parametrize(
    ("peer", "admitted"),
    [
        ("203.0.113.7", True),
        ("::ffff:203.0.113.7", True),  # a server bound to :: sees IPv4 peers mapped
        ("::1", True),
        ("198.51.100.1", False),
        ("::ffff:198.51.100.1", False),
        ("2001:db8::1", False),
    ],
)
def test_a_peer_outside_the_gate_is_closed_before_a_byte_is_read(peer: str, admitted: bool) -> None:
    ReceiverProtocol.configure(gate_policy())
    try:

        async def scenario() -> tuple[App, Wire, ServerState]:
            app, wire, state = App(), Wire(peer), ServerState()
            protocol = connection(app, wire, state)
            connected = len(state.connections)
            protocol.data_received(request(("Host", "r")))
            await settle(wire)
            assert len(state.connections) == connected
            protocol.connection_lost(None)
            return app, wire, state

        app, wire, state = asyncio.run(scenario())
    finally:
        ReceiverProtocol.configure(EdgePolicy())
    assert wire.closed is not admitted or wire.statuses() == [200]
    assert len(app.calls) == (1 if admitted else 0)
    if not admitted:
        assert wire.written == b"", "a refused peer gets no answer at all"
    assert state.connections == set()


def test_a_peer_without_an_address_is_not_admitted() -> None:
    gate = ConnectionGate(netaddr.IPSet(["0.0.0.0/0"]))
    assert gate.admits(None) is False
    assert gate.admits("not an address") is False
    assert ConnectionGate(None).admits(None) is True  # never configured: uvicorn's behaviour


def test_refusals_are_logged_at_most_burst_times_a_period(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    log = RefusalLog("a connection", "connections", burst=3, period=60, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="receiver.audit"):
        for n in range(1000):
            log.refused("peer", f"198.51.100.{n % 250}", "in no allowlist")
        assert len(caplog.records) == 3
        now[0] = 61.0
        log.refused("peer", "198.51.100.1", "in no allowlist")
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 5
    assert lines[3].startswith("997 more connections refused in 60 s")
    assert lines[4] == "refused a connection from 198.51.100.1: in no allowlist"


# --- At the connection limit ------------------------------------------------------------------


def test_at_the_limit_the_answer_is_503_with_retry_after(edge: EdgePolicy) -> None:
    async def scenario() -> tuple[App, Wire, Wire]:
        app, state = App(), ServerState()
        holders = [connection(app, Wire(), state, limit=3) for _ in range(2)]
        below = Wire()
        connection(app, below, state, limit=3).data_received(request(("Host", "r")))
        await settle(below)
        at_limit = Wire()
        connection(app, at_limit, state, limit=3).data_received(request(("Host", "r")))
        await settle(at_limit)
        assert len(holders) == 2
        return app, below, at_limit

    app, below, at_limit = asyncio.run(scenario())
    assert below.statuses() == [503]  # three connections open: the limit counts this one
    head, _, body = at_limit.written.partition(b"\r\n\r\n")
    assert at_limit.statuses() == [503]
    assert b"retry-after: 7" in head and b"connection: close" in head
    assert json.loads(body) == {"error": "too many connections, retry later"}
    assert app.calls == [] and at_limit.closed


def test_under_the_limit_requests_reach_the_app(edge: EdgePolicy) -> None:
    async def scenario() -> tuple[App, Wire]:
        app, wire = App(), Wire()
        connection(app, wire, limit=2).data_received(request(("Host", "r")))
        await settle(wire)
        return app, wire

    app, wire = asyncio.run(scenario())
    assert wire.statuses() == [200] and len(app.calls) == 1


# --- The uvicorn code ReceiverProtocol relies on ------------------------------------------------

# sha256 of the source of each uvicorn 0.54.0 method that receiver/ingest/http.py copies or
# wraps. If one changes, review the matching method of ReceiverProtocol against the new code (the
# limit check, the callbacks it counts, the parser errors it answers), then update the digest.
PINNED = {
    "connection_lost": "c91a4c9bf2e29c554a97418b5f3064e97f6e0ceaba3b90fc35a3460076c705ab",
    "connection_made": "6efb565ff3d36b916c29bd42330a2b99b601b48932389e396e5ac53dbef6b91c",
    "data_received": "010a7ae59a5d3b1a5e7326ce246878568629d126a076d8af5ba10cab040fae43",
    "on_header": "65d62c044f61fdbd354dcb3401aa590789259bfbdbc1c07512150ec924258cd6",
    "on_headers_complete": "1ea8589acfad92d8ff9182775f337d98fc469e0fa39642a83195fca920f5ca96",
    "on_message_begin": "96d377fdc7c2baef943c2bd245003abc53566ddb35777e0f4c7bc754198b5457",
    "on_url": "37be44e962b04ca87f76428ff8d7a3306ab601ffd5793d185e87c2295f0c6b6e",
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_uvicorn_code_the_protocol_relies_on_is_unchanged(name: str) -> None:
    source = inspect.getsource(getattr(HttpToolsProtocol, name))
    digest = hashlib.sha256(source.encode()).hexdigest()
    assert digest == PINNED[name], (
        f"uvicorn's HttpToolsProtocol.{name} changed (sha256 {digest}): review "
        "receiver/ingest/http.py's ReceiverProtocol against it, then update PINNED"
    )


def test_uvicorn_still_answers_its_limit_from_on_headers_complete() -> None:
    # ReceiverProtocol turns uvicorn's check off (limit_concurrency = None) and makes its own; if
    # uvicorn checked elsewhere, its bare 503 would come back.
    source = inspect.getsource(HttpToolsProtocol.on_headers_complete)
    assert "self.limit_concurrency is not None" in source and "service_unavailable" in source
    others = [
        name
        for name, member in vars(HttpToolsProtocol).items()
        if callable(member)
        and name != "on_headers_complete"
        and "limit_concurrency" in inspect.getsource(member)
        and name != "__init__"
    ]
    assert others == []


# sha256 of uvicorn 0.54.0's supervisor code that ReloadingSupervisor relies on: signals are
# queued by __init__'s handlers and dispatched by name (SIGHUP to handle_hup) from the main loop.
PINNED_SUPERVISOR = {
    "__init__": "5e0f105cb4a381b5a206060d2b96ccbe29bdb83fe44b0165bbdb9847d578a5e6",
    "handle_signals": "69be08d4fd9bc0b4acb0d5df78a26b5f7622b041f2eb75e028e74ff44e719c2d",
    "handle_hup": "c6701178f72d4d796a2badc985cce574cb72a990ece4cadd45245ddc6d62b56e",
}


@pytest.mark.parametrize("name", sorted(PINNED_SUPERVISOR))
def test_uvicorn_supervisor_code_the_reload_relies_on_is_unchanged(name: str) -> None:
    source = inspect.getsource(getattr(Multiprocess, name))
    digest = hashlib.sha256(source.encode()).hexdigest()
    assert digest == PINNED_SUPERVISOR[name], (
        f"uvicorn's Multiprocess.{name} changed (sha256 {digest}): check that SIGHUP still "
        "reaches ReloadingSupervisor.handle_hup (receiver/ingest/http.py), then update the digest"
    )
    assert signal.SIGHUP in SIGNALS


# --- uvicorn's Config, made from the server: section -----------------------------------------


def test_the_server_section_makes_uvicorns_config() -> None:
    server = settings_from_mapping(
        {"server": {"limit_concurrency": 77, "timeout_keep_alive_seconds": 9}}
    ).server
    config = uvicorn_config(
        "receiver.runtime.cli.serve:serve_app", server, host="::1", port=9, workers=3
    )
    assert (config.app, config.host, config.port, config.workers) == (
        "receiver.runtime.cli.serve:serve_app",
        "::1",
        9,
        3,
    )
    assert (config.limit_concurrency, config.timeout_keep_alive) == (77, 9)
    assert config.http is ReceiverProtocol and config.loop == "uvloop"
    # Fixed whatever the file says: uvicorn's proxy handling would trust 127.0.0.1's headers.
    assert config.proxy_headers is False and config.server_header is False
    assert config.access_log is False and config.log_config is None
    # What loadtests/bench's bare endpoint changes: uvicorn's own protocol, no lifespan.
    bare = uvicorn_config(App(), server, host="127.0.0.1", port=1, http="httptools", lifespan="off")
    assert (bare.http, bare.lifespan, bare.limit_concurrency) == ("httptools", "off", 77)
