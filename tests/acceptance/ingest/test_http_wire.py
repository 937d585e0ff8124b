"""HTTP/1.1 as it goes over the wire to a real `receiver serve`: interim answers, pipelining,
and closing, which the coalesced response writes (receiver.ingest.http) must all keep intact."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.acceptance.conftest import TOKEN, Deployment, duimp_body, free_port

pytestmark = pytest.mark.acceptance


@pytest.fixture(scope="module")
def wire(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Deployment, int]]:
    folder: Path = tmp_path_factory.mktemp("wire")
    deployment = Deployment(folder, f"sqlite:///{folder / 'r.db'}")
    port = free_port()
    try:
        deployment.serve(port, "--no-worker")
        yield deployment, port
    finally:
        deployment.stop_all()


@pytest.fixture
def port(wire: tuple[Deployment, int]) -> int:
    return wire[1]


def request(body: bytes, *extra: str) -> bytes:
    head = [
        "POST /webhooks/pucomex HTTP/1.1",
        "Host: receiver",
        f"Authorization: Bearer {TOKEN}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *extra,
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class Responses:
    """Reads whole responses off a socket by their Content-Length."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = b""

    def _fill(self) -> None:
        data = self._sock.recv(65536)
        if not data:
            raise EOFError("the server closed the connection")
        self._buffer += data

    def next(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self._buffer:
            self._fill()
        head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        length = int(headers.get("content-length", "0"))
        while len(self._buffer) < length:
            self._fill()
        body, self._buffer = self._buffer[:length], self._buffer[length:]
        return int(status_line.split()[1]), headers, body

    def at_end(self) -> bool:
        try:
            self._fill()
        except EOFError:
            return self._buffer == b""
        return False


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def test_100_continue_is_sent_before_the_body_is(port: int) -> None:
    # The interim answer is written while the request waits for its body: if it were held for
    # the final answer, client and server would each wait for the other until the body deadline.
    body = duimp_body(9101)
    with connect(port) as sock:
        whole = request(body, "Expect: 100-continue")
        sock.sendall(whole[: len(whole) - len(body)])
        answers = Responses(sock)
        status, _, _ = answers.next()
        assert status == 100
        sock.sendall(body)
        status, headers, answer = answers.next()
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert json.loads(answer)["duplicate"] is False


def test_pipelined_requests_are_answered_whole_and_in_order(port: int) -> None:
    bodies = [duimp_body(9200 + n) for n in range(3)]
    with connect(port) as sock:
        sock.sendall(b"".join(request(body) for body in bodies) + request(bodies[0]))
        answers = Responses(sock)
        replies = [answers.next() for _ in range(4)]
    assert [status for status, _, _ in replies] == [200] * 4
    decoded = [json.loads(body) for _, _, body in replies]
    assert [d["duplicate"] for d in decoded] == [False, False, False, True]
    assert len({d["id"] for d in decoded}) == 4


def test_connection_close_gets_its_answer_then_the_end(port: int) -> None:
    with connect(port) as sock:
        sock.sendall(request(duimp_body(9300), "Connection: close"))
        answers = Responses(sock)
        status, headers, _ = answers.next()
        assert status == 200
        assert headers["connection"] == "close"
        assert answers.at_end(), "the server must close after answering"


def test_a_refusal_that_closes_the_connection_is_still_read_whole(port: int) -> None:
    # 413 for a declared length over the limit: answered and closed without reading the body.
    with connect(port) as sock:
        sock.sendall(
            request(b"", "X-Pad: 1").replace(b"Content-Length: 0", b"Content-Length: 99999999")
        )
        answers = Responses(sock)
        status, headers, body = answers.next()
        assert status == 413
        assert headers["connection"] == "close"
        assert json.loads(body) == {"error": "body over the limit"}
        assert answers.at_end()


def disconnects_counted(deployment: Deployment) -> float:
    text = deployment.metrics()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "receiver_rejected_total" and sample.labels["reason"] == "disconnected"
    )


def test_a_body_cut_short_by_the_client_is_not_stored(wire: tuple[Deployment, int]) -> None:
    """Headers say 1 KiB, half of it comes, then the client closes: nothing is stored."""
    deployment, port = wire
    body = duimp_body(9400)
    whole = request(body)
    before = disconnects_counted(deployment)
    with connect(port) as sock:
        sock.sendall(whole[: len(whole) - len(body) // 2])
        time.sleep(0.1)  # the request is reading its body when the connection goes
    deadline = time.monotonic() + 10
    while disconnects_counted(deployment) == before:
        assert time.monotonic() < deadline, "the server never saw the client go"
        time.sleep(0.05)
    assert not any("26BR0000009400" in row["body"] for row in deployment.inbox())
