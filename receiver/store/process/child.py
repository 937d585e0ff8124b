"""The writer process: commits what its serving process sends, answers with receipts.

Started by ``receiver.store.process.ProcessCommitter`` as ``python -m receiver.store.process FD``
(``__main__.py`` calls ``main``); it stops when the serving process closes its end of the socket,
or goes away.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import time
from collections import deque
from typing import Any

from sqlalchemy import make_url

from receiver import logs
from receiver.errors import StoreUnavailable
from receiver.ids import new_id
from receiver.sources import dedup_key
from receiver.store.committer import Incoming, Receipt
from receiver.store.engine import make_engine, normalise_url
from receiver.store.process.wire import EXPIRED, REFUSED, Inbound, frame
from receiver.store.writer import MAX_BATCH_BYTES, BatchWriter


class _Feed:
    """The writer's end of the socket: notifications in, receipts out."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._inbox = Inbound()
        self._ready: deque[Any] = deque()
        self._ready_bytes = 0  # of the bodies in _ready
        self.ended = False

    def settings(self) -> dict[str, Any]:
        while not self._ready and self._read(block=True):
            pass
        if not self._ready:
            raise SystemExit(0)  # the parent went away before saying anything
        settings: dict[str, Any] = self._ready.popleft()
        return settings

    def _read(self, block: bool, timeout: float | None = None) -> bool:
        """Read what the socket holds; False at end of stream or when nothing came in time."""
        if self.ended:
            return False
        if not block or timeout is not None:
            ready, _, _ = select.select([self._sock], [], [], 0 if not block else timeout)
            if not ready:
                return False
        frames = self._inbox.receive(self._sock)
        if frames is None:
            self.ended = True
            return False
        for payload in frames:
            if isinstance(payload, list):  # notifications
                self._ready.extend(payload)
                self._ready_bytes += sum(len(notification[6]) for notification in payload)
            else:  # the settings, first and alone
                self._ready.append(payload)
        return True

    def batch(self, max_batch: int, max_wait: float) -> list[Any]:
        """The next batch: waits for one notification, then takes what has arrived meanwhile, up
        to ``max_batch`` notifications and MAX_BATCH_BYTES of bodies (one at least).

        It reads no more than that from the socket: what it leaves there holds the serving
        process back, which drops what expires meanwhile instead of sending it to be skipped.
        """
        while not self._ready:
            if not self._read(block=True):
                return []
        while self._wants_more(max_batch) and self._read(block=False):
            pass
        if max_wait and self._wants_more(max_batch):
            deadline = time.monotonic() + max_wait
            while self._wants_more(max_batch):
                left = deadline - time.monotonic()
                if left <= 0 or not self._read(block=True, timeout=left):
                    break
        taken: list[Any] = []
        size = 0
        ready = self._ready
        while ready and len(taken) < max_batch:
            body_bytes = len(ready[0][6])
            if taken and size + body_bytes > MAX_BATCH_BYTES:
                break
            taken.append(ready.popleft())
            size += body_bytes
        self._ready_bytes -= size
        return taken

    def _wants_more(self, max_batch: int) -> bool:
        return len(self._ready) < max_batch and self._ready_bytes < MAX_BATCH_BYTES

    def hello(self) -> None:
        self._sock.sendall(frame({"pid": os.getpid()}))

    def answer(
        self,
        error: str | bool | None,
        receipts: list[tuple[int, str, str | None]],
        commit: tuple[float, int] | None = None,
    ) -> None:
        self._sock.sendall(frame((error, receipts, commit)))


def serve_writer(sock: socket.socket) -> None:
    """Commit what the serving process sends until it closes its end (or goes away)."""
    feed = _Feed(sock)
    settings = feed.settings()
    url = make_url(normalise_url(settings["url"]))
    logs.configure(settings["log_level"], [url.password or ""], settings["log_format"])
    engine = make_engine(settings["url"], pool_size=1)
    writer = BatchWriter(engine, settings["timeout_seconds"])
    # Connected (and, on SQLite, its pragmas set) before saying hello: the serving process waits
    # for the hello before it listens, so the first request does not pay for it.
    with contextlib.suppress(Exception), engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
    feed.hello()
    max_batch: int = settings["max_batch"]
    max_wait: float = settings["max_wait_ms"] / 1000
    try:
        while True:
            frames = feed.batch(max_batch, max_wait)
            if not frames:
                return
            now = time.monotonic()
            live: list[tuple[Incoming, str]] = []
            seqs: list[int] = []
            expired: list[tuple[int, str, str | None]] = []
            for seq, expires_at, source, event, client_ip, headers, body, recovered in frames:
                if expires_at and expires_at < now:
                    expired.append((seq, "", None))
                    continue
                item = Incoming(
                    source, event, client_ip, headers, body, dedup_key(source, body), recovered
                )
                live.append((item, new_id()))
                seqs.append(seq)
            if expired:
                feed.answer(EXPIRED, expired)
            if not live:
                continue
            outcome = writer.commit(live)
            if isinstance(outcome, StoreUnavailable):
                feed.answer(str(outcome), [(seq, "", None) for seq in seqs])
            else:
                stored: list[tuple[int, str, str | None]] = []
                refused: list[tuple[int, str, str | None]] = []
                for seq, receipt in zip(seqs, outcome, strict=True):
                    if isinstance(receipt, Receipt):
                        stored.append((seq, receipt.id, receipt.duplicate_of))
                    else:
                        refused.append((seq, str(receipt), None))
                if refused:
                    feed.answer(REFUSED, refused)
                if stored:
                    feed.answer(None, stored, (writer.last_commit_seconds, writer.last_batch))
                writer.finish_checkpoint()
    except (BrokenPipeError, ConnectionResetError):
        return  # the serving process is gone; what was committed stays committed
    finally:
        writer.close()
        engine.dispose()


def main(argv: list[str]) -> None:
    sock = socket.socket(fileno=int(argv[1]))
    sock.setblocking(True)
    with contextlib.suppress(KeyboardInterrupt):
        serve_writer(sock)
    os._exit(0)  # no interpreter teardown: nothing is left to flush
