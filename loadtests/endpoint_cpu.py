"""CPU per request of the ingest endpoint alone: address, credential and event checks, the header
loop, the body read, with the store replaced by one that answers at once.

    .venv/bin/python loadtests/endpoint_cpu.py [--credential bearer|header] [--requests 40000]

``bearer``: a Bearer token in ``Authorization`` (as SINtegre or InvoiCy send it); ``header``: the
request as the Portal sends it (``event-type``, ``secret``, ``destinatario-*``), checked against
``{type: header, name: secret}``. Prints the best of 3 runs in microseconds per request. A
whole-server figure is ``python -m loadtests.bench``'s; this one isolates what the endpoint's code
costs, so that a change to it can be compared on a busy machine (run old and new alternately).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from receiver.config import settings_from_mapping
from receiver.ingest.allowlist import Allowlist
from receiver.ingest.endpoint import IngestEndpoint

SECRET = "tok-0484a6e22cf66a2d3da8953789f8c6b3"
BODY = b'{"identificacao":{"numero":"26BR00000000198","versao":2},"situacaoDuimp":"X"}'
BODY += b" " * (1024 - len(BODY))


class _Receipt:
    id = "01M82R32BN8HJVBEBTXM9S7QWK"
    duplicate_of = None


class _InstantStore:
    async def append(self, item: Any, deadline: float) -> _Receipt:
        return _Receipt()


def _scope(credential: str) -> dict[str, Any]:
    headers = [
        (b"host", b"127.0.0.1:8000"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(BODY)).encode()),
        (b"user-agent", b"portal/1.0"),
    ]
    if credential == "bearer":
        headers.append((b"authorization", b"Bearer " + SECRET.encode()))
    else:
        headers += [
            (b"event-type", b"dimp-situacao-import"),
            (b"secret", SECRET.encode()),
            (b"destinatario-tipo", b"CNPJ"),
            (b"destinatario-id", b"00000000000191"),
        ]
    return {
        "type": "http",
        "method": "POST",
        "path": "/webhooks/pucomex",
        "path_params": {"source": "pucomex"},
        "headers": headers,
        "client": ("127.0.0.1", 5000),
    }


async def _per_request(endpoint: IngestEndpoint, scope: dict[str, Any], requests: int) -> float:
    message = {"type": "http.request", "body": BODY, "more_body": False}

    async def receive() -> dict[str, Any]:
        return message

    async def send(_: Any) -> None:
        pass

    for _ in range(2000):  # warm the caches (peers, event ids)
        await endpoint(scope, receive, send)
    started = time.perf_counter()
    for _ in range(requests):
        await endpoint(scope, receive, send)
    return (time.perf_counter() - started) / requests * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--credential", choices=["bearer", "header"], default="header")
    parser.add_argument("--requests", type=int, default=40_000)
    args = parser.parse_args()
    credential: dict[str, str] = (
        {"type": "bearer", "token": SECRET}
        if args.credential == "bearer"
        else {"type": "header", "name": "secret", "value": SECRET}
    )
    settings = settings_from_mapping({"sources": {"pucomex": {"credentials": [credential]}}})
    allowlist = Allowlist.from_mapping({"pucomex": ["127.0.0.1"]})
    endpoint = IngestEndpoint(settings, allowlist, _InstantStore())  # type: ignore[arg-type]
    scope = _scope(args.credential)
    best = min(asyncio.run(_per_request(endpoint, scope, args.requests)) for _ in range(3))
    print(f"{args.credential}: {best:.2f} us per request (endpoint only, best of 3)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
