"""The webhook endpoint: checks in order, ``store.append``, then the answer. Handlers never run
here.

``IngestEndpoint`` is a plain ASGI callable (``receiver.ingest.app`` calls it for every webhook
POST): it reads the body itself so it can enforce the size limit and the read deadline while
streaming, and it answers before touching anything it does not need (no JSON parsing before the
acknowledgement). The checks, in order: the source, the address (``allowlist``), the credentials
(``verifier``), the event id, the declared length, the bytes in flight; then the body, the store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from time import perf_counter

import netaddr
from starlette.types import Receive, Scope, Send

from receiver import logs, metrics
from receiver.config import EVENT_ID, Settings
from receiver.credentials import (
    BasicCredential,
    BearerCredential,
    Credential,
    HeaderCredential,
)
from receiver.deadlines import Deadlines
from receiver.errors import StoreUnavailable
from receiver.ingest.allowlist import Allowlist, ClientResolver
from receiver.ingest.verifier import Verifier
from receiver.store import Incoming, Store

log = logging.getLogger("receiver.ingest")
audit = logging.getLogger("receiver.audit")

# Never stored or logged: they carry credentials or session state. ``secret`` is the Portal's
# chaveSecreta; the endpoint adds the name of every configured header credential.
SECRET_HEADERS = frozenset(
    {b"authorization", b"proxy-authorization", b"cookie", b"x-api-key", b"secret"}
)
# The event id of a notification, as PUCOMEX names it (DESIGN.md: first the header, then the path).
EVENT_TYPE_HEADER = b"event-type"
PEER_CACHE_SIZE = 4096
EVENT_CACHE_SIZE = 1024


def _event_id(value: bytes) -> str:
    """The event id an ``event-type`` header names, or "" when it names none."""
    text = value.decode("latin-1").strip()
    return text if EVENT_ID.fullmatch(text) and "*" not in text else ""


class _TooLarge(Exception):
    pass


class _ClientGone(Exception):
    pass


class _BodyWait:
    """A request reading its body, and whether its read deadline cancelled it."""

    __slots__ = ("cancelling", "expired", "task")

    def __init__(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.task = task
        self.cancelling = task.cancelling()
        self.expired = False

    def reached(self) -> bool:
        """Called on CancelledError: True if it came from the deadline (and is now absorbed)."""
        return self.expired and self.task.uncancel() <= self.cancelling


def _cut_off(wait: _BodyWait) -> None:
    wait.expired = True
    wait.task.cancel()


# Answer headers by body length, made once: the 200s all have the same few lengths. uvicorn copies
# the list it is given, so sharing one is safe.
_JSON_HEADERS: dict[int, list[tuple[bytes, bytes]]] = {}


def _json(
    status: int, body: bytes, extra: Sequence[tuple[bytes, bytes]] = ()
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    if not extra:
        headers = _JSON_HEADERS.get(len(body))
        if headers is None:
            headers = _JSON_HEADERS.setdefault(
                len(body),
                [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))],
            )
        return status, headers, body
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *extra,
    ]
    return status, headers, body


def _error(
    status: int, message: str, extra: Sequence[tuple[bytes, bytes]] = ()
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    return _json(status, b'{"error":"' + message.encode() + b'"}', extra)


def verifier_of(realm: str, credentials: Sequence[Credential]) -> Verifier:
    """The verifier of a source's configured credentials, from their plain values."""
    return Verifier(
        realm,
        bearer=[c.token.get_secret_value() for c in credentials if isinstance(c, BearerCredential)],
        basic=[
            (c.username, c.password.get_secret_value())
            for c in credentials
            if isinstance(c, BasicCredential)
        ],
        headers=[
            (c.name, c.value.get_secret_value())
            for c in credentials
            if isinstance(c, HeaderCredential)
        ],
    )


def _verifiers(settings: Settings) -> tuple[dict[str, Verifier], frozenset[bytes]]:
    """Each source's verifier, and the names of every header credential: those are kept out of
    every source's stored headers, whichever source configured them."""
    verifiers = {
        name: verifier_of(name, source.credentials) for name, source in settings.sources.items()
    }
    names = frozenset(name for verifier in verifiers.values() for name in verifier.header_names)
    return verifiers, names


class IngestEndpoint:
    """``POST /webhooks/{source}`` and ``POST /webhooks/{source}/{event}``."""

    def __init__(self, settings: Settings, allowlist: Allowlist, store: Store) -> None:
        self._store = store
        self._allowlist = allowlist
        self._resolver = ClientResolver(settings.trusted_proxies, settings.origin)
        self._verifiers, self._credential_headers = _verifiers(settings)
        self._secret_headers = SECRET_HEADERS | self._credential_headers
        self._max_body = settings.max_body_bytes
        self._max_inflight = settings.max_inflight_bytes
        self._inflight = 0  # bytes of bodies being read or waiting for the store, not answered
        self._body_deadlines = Deadlines[_BodyWait](settings.server.read_timeout_seconds, _cut_off)
        self._ack_timeout = settings.ack_timeout_seconds
        self._retry_after = str(settings.retry_after_seconds).encode()
        # (source, peer) -> (client address, allowed?) for peers that send no X-Forwarded-For:
        # both answers are fixed once the allowlist is loaded, and netaddr takes ~25 us to give
        # them. Bounded: emptied when full, so a flood of new peers costs what it cost uncached.
        self._peer_cache: dict[
            tuple[str, str | None], tuple[netaddr.IPAddress | None, str, bool]
        ] = {}
        # event-type value -> its event id ("" when it is not one): a sender uses a few dozen.
        self._event_ids: dict[bytes, str] = {}
        self._counts = metrics.INGEST
        self._outage = logs.OutageLog(
            log, "the store cannot commit, answering 503 with Retry-After"
        )
        # source -> its latency buckets (receiver_ingest_seconds), made before any request.
        self._latency: dict[str, metrics.Buckets] = {}
        for name in settings.sources:
            self._counts.add_source(name)
            self._latency[name] = metrics.INGEST_SECONDS.add(name)

    def reload(self, settings: Settings, allowlist: Allowlist) -> None:
        """Admit the next requests by ``settings`` and ``allowlist``: trusted proxies, sources and
        their credentials (SIGHUP, receiver.runtime.reload). Everything is built before anything is
        replaced, so a ConfigError leaves the old rules whole; requests already past their checks
        are not affected. Other settings are kept."""
        resolver = ClientResolver(settings.trusted_proxies, settings.origin)
        verifiers, credential_headers = _verifiers(settings)
        for name in settings.sources:
            self._counts.add_source(name)
            self._latency[name] = metrics.INGEST_SECONDS.add(name)
        self._resolver, self._verifiers, self._allowlist = resolver, verifiers, allowlist
        self._credential_headers = credential_headers
        self._secret_headers = SECRET_HEADERS | credential_headers
        self._peer_cache = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = perf_counter()
        status, headers, body = await self._handle(scope, receive)
        # From the head to the answer, every answer of a known source (receiver_ingest_seconds):
        # a dict lookup, two clock reads and a bisect: 4.52 -> 4.88 us per request with the
        # Portal's headers (loadtests/endpoint_cpu.py --credential header, best of 3, 3 rounds).
        latency = self._latency.get(scope["path_params"]["source"])
        if latency is not None:
            latency.observe(perf_counter() - started)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _reject(self, source: str, reason: str) -> None:
        metrics.REJECTED.labels(source, reason).inc()

    async def _handle(
        self, scope: Scope, receive: Receive
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        params = scope["path_params"]
        source: str = params["source"]
        verifier = self._verifiers.get(source)
        if verifier is None:
            metrics.REJECTED.labels("(unknown)", "unknown_source").inc()
            return _error(404, "unknown source")
        self._counts.received[source] += 1

        forwarded: list[str] = []
        authorization: bytes | None = None
        presented: dict[bytes, bytes | None] | None = None  # header credentials, by name
        content_length: bytes | None = None
        event_type: bytes | None = None
        kept: list[tuple[bytes, bytes]] = []  # stored as they came, less the credentials
        secret_headers = self._secret_headers
        for header in scope["headers"]:
            name = header[0]
            if name in secret_headers:
                if name == b"authorization":
                    authorization = header[1]
                elif name in self._credential_headers:
                    if presented is None:
                        presented = {name: header[1]}
                    else:
                        # Twice is ambiguous: it matches nothing.
                        presented[name] = None if name in presented else header[1]
                continue
            if name == b"x-forwarded-for":
                forwarded.append(header[1].decode("latin-1"))
            elif name == b"content-length":
                content_length = header[1]
            elif name == EVENT_TYPE_HEADER:
                event_type = header[1]
            kept.append(header)

        peer = scope.get("client")
        peer_host = peer[0] if peer else None
        if forwarded:
            client = self._resolver.resolve(peer_host, forwarded)
            client_ip, allowed = str(client), self._allowlist.allows(source, client)
        else:
            known = self._peer_cache.get((source, peer_host))
            if known is None:
                client = self._resolver.resolve(peer_host, forwarded)
                known = (client, str(client), self._allowlist.allows(source, client))
                if len(self._peer_cache) >= PEER_CACHE_SIZE:
                    self._peer_cache.clear()
                self._peer_cache[(source, peer_host)] = known
            client, client_ip, allowed = known
        if not allowed:
            self._reject(source, "address")
            audit.warning(
                "refused %s: address %s (peer %s) is not allowlisted",
                source,
                client,
                peer_host,
            )
            return _error(403, "address not allowed")

        if not verifier.verify(authorization, presented):
            self._reject(source, "credentials")
            audit.warning("refused %s from %s: missing or wrong credentials", source, client)
            return _error(
                401,
                "missing or wrong credentials",
                [(b"www-authenticate", verifier.challenge.encode())],
            )

        path_event: str | None = params.get("event")
        if path_event is not None and not EVENT_ID.fullmatch(path_event):
            self._reject(source, "event")
            return _error(404, "invalid event id in path")
        event = path_event
        if event_type is not None:
            # The sender's own name for the event wins over the path. One that is not an event
            # id is not refused (invariant 2): it stays in the stored headers, and the event
            # falls back to the path, then the body, when the notification is routed.
            header_event = self._event_ids.get(event_type)
            if header_event is None:
                header_event = _event_id(event_type)
                if len(self._event_ids) >= EVENT_CACHE_SIZE:
                    self._event_ids.clear()
                self._event_ids[event_type] = header_event
            if header_event:
                event = header_event

        declared = -1  # no Content-Length: a chunked body
        if content_length is not None:
            # ASCII digits only (RFC 9110): int() would also take "-1", "+5", " 5" and "1_0".
            if not content_length.isdigit():
                self._reject(source, "bad_request")
                return _error(400, "invalid content-length")
            # More digits than any limit has are over it (and int() refuses 4,300 of them).
            digits = content_length.lstrip(b"0")
            declared = int(digits or b"0") if len(digits) <= 18 else self._max_body + 1
            if declared > self._max_body:
                self._reject(source, "too_large")
                return _error(413, "body over the limit", [(b"connection", b"close")])

        # Bodies held for the store are bounded: the declared length (or the most a chunked body
        # may have) is counted from here until the answer, and past the bound the request is
        # answered 503 at once, its body not read (uvicorn discards it as it arrives): the store
        # is behind, the sender will retry. The connection stays open: closed with the body
        # unread, it is reset, and the sender may never see the 503.
        held = self._max_body if declared < 0 else declared
        if self._inflight + held > self._max_inflight:
            self._reject(source, "busy")
            return _error(
                503,
                "too many notifications waiting for the store, retry later",
                [(b"retry-after", self._retry_after)],
            )
        self._inflight += held
        try:
            return await self._receive(receive, source, event, client_ip, kept)
        finally:
            self._inflight -= held

    async def _receive(
        self,
        receive: Receive,
        source: str,
        event: str | None,
        client_ip: str,
        kept: list[tuple[bytes, bytes]],
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Read the body (bounded in size and time), store it, and the answer to give."""
        wait = _BodyWait()
        token = self._body_deadlines.add(wait)
        try:
            body = await self._read_body(receive)
        except asyncio.CancelledError:
            if not wait.reached():
                raise
            self._reject(source, "read_timeout")
            return _error(408, "request body not received in time", [(b"connection", b"close")])
        except _TooLarge:
            self._reject(source, "too_large")
            return _error(413, "body over the limit", [(b"connection", b"close")])
        except _ClientGone:
            self._reject(source, "disconnected")
            return _error(400, "client went away")
        finally:
            self._body_deadlines.discard(token)

        # The dedup key and the stored form of the headers are the writer's work.
        item = Incoming(source, event, client_ip, kept, body)
        try:
            receipt = await self._store.append(item, deadline=self._ack_timeout)
        except StoreUnavailable as error:
            self._reject(source, "store")
            # Once until a commit succeeds again (then once more, with how long it took), not
            # a line per request: counted in receiver_rejected_total{reason="store"}.
            self._outage.down(str(error))
            return _error(
                503, "store unavailable, retry later", [(b"retry-after", self._retry_after)]
            )
        if self._outage.down_since is not None:
            self._outage.up()
        if receipt.duplicate_of is None:
            self._counts.stored[source] += 1
            return _json(200, b'{"id":"' + receipt.id.encode() + b'","duplicate":false}')
        self._counts.duplicates[source] += 1
        return _json(200, b'{"id":"' + receipt.id.encode() + b'","duplicate":true}')

    async def _read_body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
