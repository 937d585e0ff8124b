"""CPU per request of the serving protocol alone: receiver.ingest.http.ReceiverProtocol against
uvicorn's own HttpToolsProtocol, on the same typical webhook request, in one process.

    .venv/bin/python loadtests/protocol_cost.py [--requests 200000] [--rounds 5]

Each protocol gets a keep-alive connection on a transport that only counts what is written, and
an ASGI app that answers at once; the request (a ~1 KiB PUCOMEX POST with the headers the Portal
sends) is fed whole, then the loop runs until the answer is written. What differs is the work
ReceiverProtocol adds per request (head counting, the deadline, the limit check, the coalesced
write), so the difference is its cost; a measuring tool, nothing passes or fails.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from receiver.ingest.http import ReceiverProtocol

BODY = b'{"evento":"duimp.registro","dataHora":"2026-11-22T10:00:00-03:00","dados":{"x":"%s"}}' % (
    b"a" * 900
)
REQUEST = (
    b"POST /webhooks/pucomex/duimp.registro HTTP/1.1\r\nHost: receiver.example\r\n"
    b"Content-Type: application/json\r\nsecret: chave-secreta-123\r\n"
    b"event-type: duimp.registro\r\ndestinatario-tipo: SEFAZ\r\ndestinatario-id: 35\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
)


class Sink(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.answers = 0

    def write(self, data: Any) -> None:
        self.answers += 1

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )


async def app(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"{}"})


async def run(protocol_class: type[HttpToolsProtocol], requests: int) -> float:
    config = uvicorn.Config(app, http=protocol_class, limit_concurrency=4096, log_config=None)
    config.load()
    loop = asyncio.get_running_loop()
    protocol = protocol_class(config=config, server_state=ServerState(), app_state={}, _loop=loop)
    sink = Sink()
    protocol.connection_made(sink)
    started = time.perf_counter()
    for _ in range(requests):
        protocol.data_received(REQUEST)
        # Polled, not awaited on an event: an event set per request would be measured too.
        while protocol.cycle is not None and not protocol.cycle.response_complete:  # noqa: ASYNC110
            await asyncio.sleep(0)
        await asyncio.sleep(0)  # the coalesced write leaves at the end of the step
    elapsed = time.perf_counter() - started
    assert sink.answers >= requests
    return elapsed / requests * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    import uvloop  # what receiver serve runs on

    new_loop: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    results: dict[str, list[float]] = {"uvicorn HttpToolsProtocol": [], "ReceiverProtocol": []}
    for _ in range(args.rounds):  # alternated, so that a busy moment falls on both
        for name, cls in (
            ("uvicorn HttpToolsProtocol", HttpToolsProtocol),
            ("ReceiverProtocol", ReceiverProtocol),
        ):
            with asyncio.Runner(loop_factory=new_loop) as runner:
                results[name].append(runner.run(run(cls, args.requests)))
    base = statistics.median(results["uvicorn HttpToolsProtocol"])
    for name, values in results.items():
        median = statistics.median(values)
        print(
            f"{name:<28} {median:6.2f} us per request (median of {args.rounds}; "
            f"{min(values):.2f}-{max(values):.2f}), {median - base:+.2f} us over uvicorn's"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
