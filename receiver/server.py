"""The uvicorn protocol that ``receiver serve`` uses: httptools with a deadline on request headers.

uvicorn has no header deadline, and its keep-alive timer is cancelled by any byte, so a client
sending a byte a second would hold a connection (and a ``limit_concurrency`` slot) for ever. Here
each request's headers must arrive whole within a deadline counted from the connection (or the
end of the previous response); the body has its own deadline in the ingest endpoint.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEADER_TIMEOUT_ENV = "RECEIVER_HEADER_TIMEOUT_SECONDS"
DEFAULT_HEADER_TIMEOUT = 10.0


def header_timeout() -> float:
    """Read once per process: uvicorn builds protocols itself, also in its worker processes."""
    try:
        value = float(os.environ.get(HEADER_TIMEOUT_ENV, DEFAULT_HEADER_TIMEOUT))
    except ValueError:
        return DEFAULT_HEADER_TIMEOUT
    return value if value > 0 else DEFAULT_HEADER_TIMEOUT


class HeaderDeadlineProtocol(HttpToolsProtocol):
    header_timeout = header_timeout()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # When the awaited request's headers must be complete (loop time); None: not waiting.
        self._header_due: float | None = None
        # One timer per connection, not one per request: arming and disarming only move
        # _header_due (every request does both; a timer handle made and cancelled costs several
        # times more). When the timer fires it closes the connection if the deadline has passed,
        # and otherwise sets itself again for the current deadline.
        self._header_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        due = self.loop.time() + self.header_timeout
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

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # A pipelined request may already be running: its headers are in, so no deadline for it.
        idle = self.cycle is None or self.cycle.response_complete
        if idle and not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)
