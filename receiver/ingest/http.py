"""uvicorn as ``receiver serve`` runs it: its ``Config``, made from the ``server:`` section by
``uvicorn_config`` (for one serving process, ``--workers N`` and the benchmark's bare endpoint);
``ReceiverProtocol``, httptools with what uvicorn lacks in front of the app (``receiver.ingest.edge``
says what) and a response written with one ``send`` instead of two; and ``ReloadingSupervisor``.

- Peers in no allowlist (and not a trusted proxy, monitoring address or loopback) are closed in
  ``connection_made``, before a byte is read: they cannot fill ``limit_concurrency``.
- Each request's head must arrive whole within a deadline counted from the connection (or the
  end of the previous response): uvicorn has none, and its keep-alive timer is cancelled by any
  byte, so a client sending a byte a second would hold a connection for ever. The body has its
  own deadline in the ingest endpoint.
- The head is bounded in bytes and header lines (httptools bounds neither: a 1 MiB header or
  5,000 headers reached the app, and 3 connections sending 8 MiB of headers took a serving
  process from 72 MB to 1.3 GB): past a limit the answer is 431 and the app is never called.
- At ``limit_concurrency`` the answer is 503 with ``Retry-After``, not uvicorn's bare 503.
- With ``--workers N``, SIGHUP reloads every serving process in place (``ReloadingSupervisor``)
  instead of uvicorn's restart of them all.

On a typical webhook request this protocol costs 14.2 us of CPU against 11.1 us for uvicorn's
own and 13.6 us before the head limits, gate and limit answer were added (medians of 5 rounds,
``loadtests/protocol_cost.py``; the coalesced write and the deadline are most of the rest).

This module is the receiver's one place that relies on uvicorn's internals (its httptools
protocol's callbacks and attributes, its multi-process supervisor; the dispatcher's
``receiver.dispatcher.tls`` is the other, for its own need, and ``lint-imports`` allows no
third); ``tests/unit/ingest/test_http.py`` pins the uvicorn code it depends on, so an upgrade
that changes it fails there first.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Callable
from typing import Any

import httptools
import uvicorn
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.supervisors import Multiprocess

from receiver.config import ServerSettings
from receiver.ingest import tls
from receiver.ingest.edge import BUSY_REFUSED, CONNECTIONS_REFUSED, HEADS_REFUSED, EdgePolicy


class CoalescingTransport:
    """The connection's transport, except that what is written in one step goes out in one send.

    uvicorn writes a response's status line and headers, then its body, with two ``write`` calls;
    on a TCP_NODELAY socket each is a ``send`` of its own and a segment of its own, which the
    client then reads apart. At 64 connections on SQLite the second send cost the serving process
    4-5 us of CPU per request, and the client and the kernel's loopback paid for the extra
    segment too (A/B over 3 rounds: +6% requests per second). Writes are held until the response
    is complete, or at the latest until the end of the event loop's iteration, so a streamed
    chunk or a ``100 Continue`` still leaves at once. Everything else is the real transport's.
    """

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._held:
            self._loop.call_soon(self.flush)
        self._held.append(data)

    def flush(self) -> None:
        held = self._held
        if not held:
            return
        self._held = []
        if self._transport.is_closing():  # the peer went away: nobody to send it to
            return
        self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


# What a raw head has besides what the callbacks count: the method, the version, the final line
# end (and room for a method longer than POST).
HEAD_SLACK = 64


class _HeadRefused(Exception):
    """Raised in a parser callback to stop parsing a request head that was just refused."""


def _answer(status: int, body: bytes) -> bytes:
    """A whole JSON answer that closes the connection, written by the protocol itself."""
    return b"".join(
        [
            STATUS_LINE[status],
            b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        ]
    )


_HEAD_TOO_LARGE = _answer(431, b'{"error":"request header fields too large"}')


class _BusyAnswer:
    """The ASGI answer at the connection limit: 503 with Retry-After, and the connection closed."""

    def __init__(self, retry_after: int) -> None:
        body = b'{"error":"too many connections, retry later"}'
        self._start = {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
                (b"retry-after", b"%d" % retry_after),
                (b"connection", b"close"),
            ],
        }
        self._body = {"type": "http.response.body", "body": body, "more_body": False}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(self._start)
        await send(self._body)


class ReceiverProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the edge policy in front of the app (module docstring)."""

    # Replaced by configure(): at start-up in every serving process, and on SIGHUP. A protocol
    # reads it once, when its connection is made.
    edge = EdgePolicy()

    _busy = _BusyAnswer(edge.retry_after_seconds)

    @classmethod
    def configure(cls, edge: EdgePolicy) -> None:
        cls.edge = edge
        cls._busy = _BusyAnswer(edge.retry_after_seconds)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        edge = self.edge
        self._edge = edge
        self._max_head = edge.max_header_bytes
        self._max_headers = edge.max_header_count
        # uvicorn's own check answers a bare 503; ours (on_headers_complete) adds Retry-After.
        self._limit = self.limit_concurrency
        self.limit_concurrency = None
        # False once the peer was refused: nothing of uvicorn's was set up for the connection.
        self._admitted = True
        # The request head being read: bytes and header lines given by the parser's callbacks,
        # and bytes of chunks that were head from end to end (which also bounds one long header
        # line that httptools gathers before calling on_header: to the limit and one chunk, as
        # the chunk where a head begins is not counted); whether a head is begun and unfinished,
        # and how many have begun.
        self._head_bytes = 0
        self._header_lines = 0
        self._head_chunks = 0
        self._in_head = False
        self._heads_begun = 0
        self._head_refused = False
        # When the awaited request's headers must be complete (loop time); None: not waiting.
        self._header_due: float | None = None
        # One timer per connection, not one per request: arming and disarming only move
        # _header_due (every request does both; a timer handle made and cancelled costs several
        # times more). When the timer fires it closes the connection if the deadline has passed,
        # and otherwise sets itself again for the current deadline.
        self._header_timer: asyncio.TimerHandle | None = None

    # --- The connection -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        peer = transport.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple | list) and peer else None
        if not self._edge.gate.admits(host):
            self._admitted = False
            CONNECTIONS_REFUSED.refused("peer", host, "the address is in no source's allowlist")
            transport.close()
            return
        super().connection_made(transport)
        # uvicorn's request cycles write through self.transport; its flow control keeps the
        # real one.
        self._writes = CoalescingTransport(transport, self.loop)
        self.transport = self._writes  # type: ignore[assignment]
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._admitted:
            return
        self._disarm()
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # uvicorn's data_received, and the head's byte count for chunks that were all head.
        if not self._admitted:
            return
        self._unset_keepalive_if_required()
        # Whether this chunk is head from end to end: the head had begun and stays unfinished.
        head_before = self._heads_begun if self._in_head else -1
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if self._head_refused:
                return  # answered 431 already
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return
        if self._in_head and head_before == self._heads_begun:
            self._head_chunks += len(data)
            if self._head_chunks > self._max_head + HEAD_SLACK and not self._head_refused:
                self._refuse_head("header_bytes", f"request head over {self._max_head} bytes")

    # --- The request head -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._heads_begun += 1
        self._head_bytes = self._header_lines = self._head_chunks = 0

    def on_url(self, url: bytes) -> None:
        # uvicorn's on_url, counted.
        self._head_bytes += len(url)
        if self._head_bytes > self._max_head:
            self._refuse_head("header_bytes", f"request head over {self._max_head} bytes")
            raise _HeadRefused
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        # uvicorn's on_header, counted (it runs for every header: kept inline, no super()).
        self._header_lines += 1
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > self._max_head or self._header_lines > self._max_headers:
            if self._header_lines > self._max_headers:
                self._refuse_head("header_count", f"over {self._max_headers} header lines")
            else:
                self._refuse_head("header_bytes", f"request head over {self._max_head} bytes")
            raise _HeadRefused
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        limit = self._limit
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            # What uvicorn does at its limit, with our answer in place of its bare 503.
            BUSY_REFUSED.refused("busy", self.client[0] if self.client else None, "at the limit")
            app, self.app = self.app, self._busy
            try:
                super().on_headers_complete()
            finally:
                self.app = app
            return
        super().on_headers_complete()

    def _refuse_head(self, reason: str, detail: str) -> None:
        self._head_refused = True
        HEADS_REFUSED.refused(reason, self.client[0] if self.client else None, detail)
        self._disarm()
        if not self.transport.is_closing():
            self.transport.write(_HEAD_TOO_LARGE)
            self.transport.close()

    # --- The header deadline --------------------------------------------------------------

    def _arm(self) -> None:
        due = self.loop.time() + self._edge.header_timeout
        self._header_due = due
        if self._header_timer is None:
            self._header_timer = self.loop.call_at(due, self._check_headers)

    def _disarm(self) -> None:
        self._header_due = None

    def _check_headers(self) -> None:
        self._header_timer = None
        due = self._header_due
        if due is None:
            return
        if self.loop.time() < due:
            self._header_timer = self.loop.call_at(due, self._check_headers)
            return
        self._header_due = None
        if not self.transport.is_closing():
            self.transport.close()

    def on_response_complete(self) -> None:
        # The response is whole: send it now, not at the end of the loop's iteration.
        self._writes.flush()
        super().on_response_complete()
        # A pipelined request may already be running: its headers are in, so no deadline for it.
        idle = self.cycle is None or self.cycle.response_complete
        if idle and not self.transport.is_closing():
            self._arm()


log = logging.getLogger("receiver.serve")


def uvicorn_config(
    app: Any,
    server: ServerSettings,
    *,
    host: str,
    port: int,
    http: type[asyncio.Protocol] | str = ReceiverProtocol,
    **overrides: Any,
) -> uvicorn.Config:
    """uvicorn's ``Config`` for ``receiver serve`` (one process, or ``workers=N`` with an app
    factory's import string), from the ``server:`` section; ``loadtests/bench`` serves its bare
    endpoint with it too (``http="httptools"``: uvicorn's own protocol), so both run alike.

    What the section does not hold is fixed here: the parser and the loop are set rather than
    left to "auto", since they are what the benchmark measures and a missing one must fail here,
    not slow down silently; uvicorn's proxy-header handling is off, since it trusts 127.0.0.1 by
    default and would let a local proxy's header choose the client's address (our code resolves
    it from trusted_proxies); logging is ours, and there is no access log (a line per request).
    With ``server.ssl_certfile`` and ``ssl_keyfile`` it serves TLS (``receiver.ingest.tls``).
    """
    if server.ssl_certfile is not None and server.ssl_keyfile is not None:
        # receiver.ingest.tls: the receiver's TLS policy, reloaded on SIGHUP.
        overrides = {
            "ssl_certfile": str(server.ssl_certfile),
            "ssl_keyfile": str(server.ssl_keyfile),
            "ssl_context_factory": tls.context_factory,
            **overrides,
        }
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "http": http,
        "loop": "uvloop",
        "proxy_headers": False,
        "server_header": False,
        "timeout_keep_alive": server.timeout_keep_alive_seconds,
        "limit_concurrency": server.limit_concurrency,
        "h11_max_incomplete_event_size": 16 * 1024,
        "log_config": None,
        "access_log": False,
        "lifespan": "on",
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)


class ReloadingSupervisor(Multiprocess):
    """uvicorn's supervisor of ``--workers N``, except for SIGHUP.

    uvicorn answers SIGHUP by starting a new process per worker and stopping the old one, which
    closes its idle keep-alive connections: a request sent on one at that moment is lost to a
    reset. Here the file is checked once (``check`` gives what is wrong, or None) and SIGHUP is
    passed on to each serving process, which reloads in place (``receiver.runtime.reload``) and
    closes nothing; a wrong file is refused here with one line, and the workers keep what they
    have.
    Everything else (SIGTERM drains and stops, a dead worker is replaced) is uvicorn's.
    """

    def __init__(
        self, config: uvicorn.Config, sockets: list[socket.socket], check: Callable[[], str | None]
    ) -> None:
        super().__init__(config, sockets)
        self._check = check

    def handle_hup(self) -> None:
        problem = self._check()
        if problem is not None:
            log.error("SIGHUP: not reloaded, the workers keep their configuration: %s", problem)
            return
        for process in self.processes:
            if process.pid is not None and process.process.is_alive():
                os.kill(process.pid, signal.SIGHUP)
        log.info("SIGHUP: passed on to %d serving processes", len(self.processes))
