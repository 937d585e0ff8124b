"""CoalescingTransport: what one step writes leaves in one write, and nothing waits past its step.

The transport below it records calls; it stands in for uvloop's, whose behaviour the acceptance
test over a real socket (tests/acceptance/ingest/test_http_wire.py) covers.
"""

from __future__ import annotations

import asyncio
from typing import Any

from receiver.ingest.http import CoalescingTransport


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, Any]] = []
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closing, "written after close"
        self.calls.append(("write", bytes(data)))

    def close(self) -> None:
        self.calls.append(("close", None))
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 5000) if name == "peername" else default


def test_head_and_body_of_one_step_leave_in_one_write() -> None:
    async def scenario() -> RecordingTransport:
        real = RecordingTransport()
        writes = CoalescingTransport(real, asyncio.get_running_loop())
        writes.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        writes.write(b"{}")
        assert real.calls == [], "held until the response is complete or the step ends"
        writes.flush()  # what the protocol does when the response is complete
        await asyncio.sleep(0)  # the end-of-step flush then finds nothing left
        return real

    real = asyncio.run(scenario())
    assert real.calls == [("write", b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")]


def test_a_lone_write_leaves_at_the_end_of_its_step() -> None:
    # uvicorn's "100 Continue" is written while the request waits for its body: it must not wait
    # for a response that the client will only cause by sending that body.
    async def scenario() -> list[tuple[str, Any]]:
        real = RecordingTransport()
        writes = CoalescingTransport(real, asyncio.get_running_loop())
        writes.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await asyncio.sleep(0)
        seen = list(real.calls)
        writes.write(b"chunk 1")
        await asyncio.sleep(0)
        writes.write(b"chunk 2")
        await asyncio.sleep(0)
        return seen + real.calls[len(seen) :]

    calls = asyncio.run(scenario())
    assert calls == [
        ("write", b"HTTP/1.1 100 Continue\r\n\r\n"),
        ("write", b"chunk 1"),
        ("write", b"chunk 2"),
    ]


def test_close_sends_what_is_held_first() -> None:
    async def scenario() -> list[tuple[str, Any]]:
        real = RecordingTransport()
        writes = CoalescingTransport(real, asyncio.get_running_loop())
        writes.write(b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n")
        writes.close()
        await asyncio.sleep(0)  # the scheduled flush must not write to the closed transport
        return real.calls

    assert asyncio.run(scenario()) == [
        ("write", b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n"),
        ("close", None),
    ]


def test_what_is_held_for_a_peer_that_went_away_is_dropped() -> None:
    async def scenario() -> list[tuple[str, Any]]:
        real = RecordingTransport()
        writes = CoalescingTransport(real, asyncio.get_running_loop())
        writes.write(b"HTTP/1.1 200 OK\r\n\r\n")
        real.closing = True  # connection lost before the step ended
        await asyncio.sleep(0)
        return real.calls

    assert asyncio.run(scenario()) == []


def test_everything_else_is_the_real_transports() -> None:
    async def scenario() -> None:
        real = RecordingTransport()
        writes = CoalescingTransport(real, asyncio.get_running_loop())
        assert writes.get_extra_info("peername") == ("127.0.0.1", 5000)
        assert writes.is_closing() is False
        real.closing = True
        assert writes.is_closing() is True

    asyncio.run(scenario())
