"""The framing between a serving process and its writer process."""

from __future__ import annotations

import os
import socket
import threading

from receiver.store.process.wire import Inbound, frame, frames


def test_frames_round_trip_whatever_the_chunks_the_socket_gives() -> None:
    payloads = [
        {"url": "sqlite:///x.db", "max_batch": 512, "max_wait_ms": 0.0, "log_level": "INFO"},
        [
            (1, 12.5, "pucomex", None, "203.0.113.7", [(b"host", b"x")], os.urandom(1024), False),
            (2, 0.0, "invoicy", "nfe.documento-autorizado", "::1", [], b"", True),
        ],
        (None, [(1, "01ABC", None), (2, "01ABD", "01ABC")]),
        ("", []),
    ]
    stream = b"".join(frame(p) for p in payloads)
    for chunk_size in (1, 3, 7, 64, len(stream)):
        buffer = bytearray()
        received = []
        for start in range(0, len(stream), chunk_size):
            buffer += stream[start : start + chunk_size]
            received += frames(buffer)
        assert received == payloads
        assert buffer == bytearray()  # nothing left over once every frame is whole


def test_an_incomplete_frame_stays_in_the_buffer_until_it_is_whole() -> None:
    whole = frame((7, 0.0, "sintegre", "produto.publicado", "::1", [], b"{}", True))
    buffer = bytearray(whole[:-1])
    assert frames(buffer) == []
    assert bytes(buffer) == whole[:-1]
    buffer += whole[-1:]
    assert frames(buffer) == [(7, 0.0, "sintegre", "produto.publicado", "::1", [], b"{}", True)]


def test_frames_longer_than_the_scratch_buffer_arrive_whole_over_several_reads() -> None:
    headers: list[tuple[bytes, bytes]] = []
    big = [(n, 0.0, "pucomex", None, "::1", headers, os.urandom(4096), False) for n in range(200)]
    small = (None, [(1, "01ABC", None)])
    assert len(frame(big)) > 3 * Inbound.SCRATCH
    inbound = Inbound()
    ours, theirs = socket.socketpair()
    with ours, theirs:

        def send() -> None:
            ours.sendall(frame(big) + frame(small))
            ours.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send)
        sender.start()
        received: list[object] = []
        reads = 0
        while (frames := inbound.receive(theirs)) is not None:
            reads += 1
            received += frames
        sender.join()
    assert received == [big, small]
    assert reads > 3  # at most SCRATCH bytes per read: the big frame needed several
