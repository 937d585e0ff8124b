"""What a real `receiver serve` does before its app sees a request, over real sockets: request
heads over the limits get 431 and store nothing; a peer in no allowlist is closed before its
request is read (4,200 of them do not starve a delivery); at the connection limit a delivery gets
503 with Retry-After. Loopback tricks: a client socket bound to 127.0.0.2 is another address."""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.acceptance.conftest import TOKEN, Deployment, duimp_body, free_port
from tests.acceptance.ingest.test_http_wire import Responses, request

pytestmark = pytest.mark.acceptance

ELSEWHERE = "127.0.0.2"  # in no allowlist of the deployment (127.0.0.1 and ::1 only)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Deployment, int]]:
    folder: Path = tmp_path_factory.mktemp("edge")
    deployment = Deployment(folder, f"sqlite:///{folder / 'r.db'}")
    port = free_port()
    try:
        deployment.serve(port, "--no-worker")
        yield deployment, port
    finally:
        deployment.stop_all()


def stored(deployment: Deployment) -> int:
    return len(deployment.inbox())


def answer_to(port: int, data: bytes, piece: int = 16384) -> tuple[int | None, dict[str, str]]:
    """Send ``data`` piece by piece, stopping as soon as the server answers or hangs up; return
    the answer's status and headers (None if the connection was reset before one came)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for start in range(0, len(data), piece):
                if select.select([sock], [], [], 0)[0]:
                    break  # an answer (or the end) is waiting: the server stopped reading
                sock.sendall(data[start : start + piece])
        try:
            status, headers, _ = Responses(sock).next()
        except (EOFError, ConnectionResetError):
            return None, {}
        return status, headers


def head(*lines: str) -> bytes:
    body = duimp_body(0)
    return request(body, *lines)


@pytest.mark.parametrize(
    ("case", "lines"),
    [
        ("one 1 MiB header", ["X-Big: " + "a" * (1 << 20)]),
        ("5,000 headers", [f"X-H{n}: v" for n in range(5000)]),
        ("8 MiB of headers", [f"X-H{n}: " + "b" * 8000 for n in range(1000)]),
        ("a 40 KiB target", []),
    ],
)
def test_a_head_over_the_limits_gets_431_and_stores_nothing(
    served: tuple[Deployment, int], case: str, lines: list[str]
) -> None:
    deployment, port = served
    before = stored(deployment)
    data = head(*lines)
    if case == "a 40 KiB target":
        data = data.replace(b"/webhooks/pucomex", b"/webhooks/pucomex?" + b"q" * 40960, 1)
    status, headers = answer_to(port, data)
    # A client still sending when the server closes may see its connection reset instead.
    assert status in (431, None), f"{case}: answered {status}"
    if status == 431:
        assert headers["connection"] == "close"
    assert stored(deployment) == before
    ok = httpx.post(
        f"http://127.0.0.1:{port}/webhooks/pucomex",
        content=duimp_body(hash(case) % 10_000 + 1),
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert ok.status_code == 200  # and the server is none the worse


def test_the_431_answer_is_whole(served: tuple[Deployment, int]) -> None:
    _, port = served
    status, headers = answer_to(port, head(*(f"X-H{n}: v" for n in range(150))))
    assert status == 431 and headers["content-type"] == "application/json"


def test_a_head_within_the_limits_is_stored_whole(served: tuple[Deployment, int]) -> None:
    deployment, port = served
    # 95 lines and about 30 KiB: under the defaults (100 lines, 32 KiB).
    lines = [f"X-Near-{n}: " + "c" * 300 for n in range(90)]
    status, _ = answer_to(port, request(duimp_body(31337), *lines))
    assert status == 200
    (row,) = [r for r in deployment.inbox() if r["headers"].get("x-near-0")]
    assert sum(1 for name in row["headers"] if name.startswith("x-near-")) == 90


def connect_from(address: str, port: int) -> socket.socket:
    sock = socket.socket()
    sock.settimeout(10)
    sock.bind((address, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def test_a_peer_in_no_allowlist_is_closed_before_its_request_is_read(
    served: tuple[Deployment, int],
) -> None:
    deployment, port = served
    before = stored(deployment)
    with connect_from(ELSEWHERE, port) as sock:
        started = time.monotonic()
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(1) == b""  # closed without a word, before anything was sent
        assert time.monotonic() - started < 5
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(head())
    assert stored(deployment) == before
    metrics = deployment.metrics()
    assert 'receiver_edge_refused_total{reason="peer"}' in metrics
    deadline = time.monotonic() + 5
    while "refused a connection from 127.0.0.2" not in deployment.output():
        assert time.monotonic() < deadline, "no audit line for the refused peer"
        time.sleep(0.05)


def test_thousands_of_connections_from_elsewhere_do_not_starve_a_delivery(
    served: tuple[Deployment, int],
) -> None:
    """Finding 5: 4,200 idle connections from one address made a delivery get uvicorn's bare
    503. Now each is closed as it comes, and the deliveries beside them are stored."""
    _, port = served

    async def scenario() -> tuple[int, list[int]]:
        async def idle() -> bool:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(ELSEWHERE, 0)
            )
            try:
                return await asyncio.wait_for(reader.read(1), timeout=20) == b""
            except ConnectionResetError:
                return True
            finally:
                writer.close()

        crowd = [asyncio.create_task(idle()) for _ in range(4200)]
        statuses = []
        async with httpx.AsyncClient(timeout=10) as client:
            for n in range(20):
                answer = await client.post(
                    f"http://127.0.0.1:{port}/webhooks/pucomex",
                    content=duimp_body(40_000 + n),
                    headers={"Authorization": f"Bearer {TOKEN}"},
                )
                statuses.append(answer.status_code)
        closed = await asyncio.gather(*crowd, return_exceptions=True)
        return sum(1 for c in closed if c is True), statuses

    closed, statuses = asyncio.run(scenario())
    assert statuses == [200] * 20
    assert closed == 4200, "every connection from elsewhere is closed by the server"


def test_at_the_connection_limit_a_delivery_gets_503_with_retry_after(tmp_path: Path) -> None:
    deployment = Deployment(
        tmp_path,
        f"sqlite:///{tmp_path / 'r.db'}",
        retry_after_seconds=3,
        # The holders below stay, however slow the machine is.
        server={"limit_concurrency": 20, "header_timeout_seconds": 60},
    )
    port = free_port()
    acknowledged: list[str] = []

    def deliver(n: int) -> httpx.Response:
        answer = httpx.post(
            f"http://127.0.0.1:{port}/webhooks/pucomex",
            content=duimp_body(n),
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        if answer.status_code == 200:
            acknowledged.append(duimp_body(n).decode())
        return answer

    try:
        deployment.serve(port, "--no-worker")
        holders = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
        try:
            deadline = time.monotonic() + 10
            n = 0
            # Until the server has taken every holder's connection (it counts them as it does).
            while (busy := deliver(n := n + 1)).status_code == 200:
                assert time.monotonic() < deadline, "the limit was never reached"
        finally:
            for holder in holders:
                holder.close()
        assert busy.status_code == 503
        assert busy.headers["retry-after"] == "3"
        assert busy.json() == {"error": "too many connections, retry later"}
        deadline = time.monotonic() + 10
        while deliver(n := n + 1).status_code != 200:
            assert time.monotonic() < deadline, "the limit did not free up"
            time.sleep(0.05)
    finally:
        deployment.stop_all()
    assert sorted(row["body"] for row in deployment.inbox()) == sorted(acknowledged)
