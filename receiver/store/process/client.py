"""The process committer, the serving process's side: group commit in a writer process of its
own, so the event loop and the writer stop sharing one GIL.

With the writer as a thread, every driver call (BEGIN, INSERT, COMMIT and its fsync) hands the GIL
back and forth with the event loop, which holds it for runs of requests; at 64 connections that
ping-pong cost more event-loop time than the requests themselves. Here the serving process only
frames the checked notifications onto a Unix socket (one ``send`` per loop iteration, or per
``FLUSH_EVERY`` notifications, for all of them) and reads the receipts back; the writer process
makes the ids and dedup keys, commits batches through the same ``BatchWriter`` as the thread, and
answers with one frame per batch.

A request is still answered 200 only after the commit that holds its row has returned in the
writer. If the writer dies, every request waiting on it gets ``StoreUnavailable`` (a 503, which
the Portal retries), and a new writer is started.

The frames on the socket are described in ``receiver.store.process.wire``; the writer process's
side is ``receiver.store.process.child``, which ``python -m receiver.store.process FD`` runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
import socket
import subprocess
import sys
import threading
import time
from typing import Any

from receiver import logs
from receiver.errors import RefusedByStore, StoreUnavailable
from receiver.store.committer import CommitHealth, Incoming, Receipt, record_commit
from receiver.store.process.wire import EXPIRED, REFUSED, Inbound, frame
from receiver.store.writer import DEFAULT_TIMEOUT_SECONDS

log = logging.getLogger("receiver.store")

_SOCKET_BUFFER = 4 * 1024 * 1024  # a burst of requests fits without the event loop waiting
_RESTART_SECONDS = 0.5
# Notifications go to the writer at the end of each event-loop iteration, or as soon as this many
# are waiting. Under load one iteration runs dozens of requests (milliseconds of work), and a
# writer that saw them only at its end sat idle meanwhile, then committed them all while the loop
# waited in turn; handing them over every 32 lets the writer commit the first ones while the loop
# checks the rest. bench A/B at 64 connections on SQLite, against once per iteration: 32: +12%,
# 16: +7%, 8: +4% (smaller hand-overs make smaller commits, each with its own fsync).
FLUSH_EVERY = 32
# A frame carries at most this many bytes of bodies (one body, however large, at least).
FRAME_BYTES = 1024 * 1024


class ProcessCommitter(CommitHealth):
    """A ``Committer`` (``receiver.store.committer``): hands notifications to the writer process,
    awaits receipts.

    Bound to the event loop that starts it (a serving process has one).
    """

    def __init__(
        self,
        url: str,
        max_batch: int = 512,
        max_wait_ms: float = 0.0,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        super().__init__()
        self._settings = {
            "url": url,
            "max_batch": max_batch,
            "max_wait_ms": max_wait_ms,
            "timeout_seconds": timeout_seconds,
            "log_level": logging.getLevelName(logging.getLogger().getEffectiveLevel()),
            "log_format": logs.current_format(),
        }
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._pending: dict[int, asyncio.Future[Receipt]] = {}
        self._seq = 0
        # Notifications not framed yet, oldest first, and the bytes of their bodies. A stalled
        # writer fills the socket, and the rest waits here as it came (the bodies the requests
        # hold anyway), not as copies in frames: what expires meanwhile is dropped (_drop_expired).
        self._outbox: list[tuple[Any, ...]] = []
        self._outbox_bytes = 0
        # The one frame being written to the socket (a frame, once begun, must go whole).
        self._sending: memoryview | None = None
        self._flush_scheduled = False
        self._inbox = Inbound()
        self._closing = False
        self._sock: socket.socket | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._restart: asyncio.TimerHandle | None = None
        self._spawn()

    @property
    def pid(self) -> int | None:
        """The writer process's id (None while a new one is about to start)."""
        return self._process.pid if self._process is not None else None

    # --- lifecycle ---------------------------------------------------------------------------

    def _spawn(self) -> None:
        self._restart = None
        try:
            self._start_writer()
        except OSError as error:  # no memory or processes left to fork: try again shortly
            self.last_failure = time.monotonic()
            log.error("cannot start the writer process: %s", error)
            self._restart = self._loop.call_later(_RESTART_SECONDS, self._spawn)

    def _start_writer(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        for sock in (ours, theirs):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SOCKET_BUFFER)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SOCKET_BUFFER)
        with theirs:
            self._process = subprocess.Popen(  # noqa: S603 (our interpreter, our module)
                [sys.executable, "-m", "receiver.store.process", str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                # Out of the terminal's process group: a Ctrl-C must not interrupt a commit. The
                # writer stops when this process closes the socket, or dies.
                start_new_session=True,
            )
        ours.setblocking(False)
        self._sock = ours
        self._sending = memoryview(frame(self._settings))
        self._inbox.clear()
        self.started = False
        self._loop.add_reader(ours.fileno(), self._readable)
        self._schedule_flush()

    def close(self) -> None:
        """Let the writer commit what it has, then wait for it to exit. Any thread may call it."""
        self._closing = True
        if self._restart is not None:
            self._restart.cancel()
        process, sock = self._process, self._sock
        if sock is not None:
            # The buffers belong to the loop's thread: the last send happens there if it runs.
            sent = threading.Event()

            def finish_sending() -> None:
                with contextlib.suppress(OSError):
                    self._send_now(blocking=True)
                    sock.shutdown(socket.SHUT_WR)  # the writer reads EOF once it has everything
                sent.set()

            if threading.get_ident() != self._loop_thread and self._loop.is_running():
                try:
                    self._loop.call_soon_threadsafe(finish_sending)
                except RuntimeError:  # closed meanwhile
                    finish_sending()
                sent.wait(timeout=30)
            else:
                finish_sending()
        if process is not None:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if sock is not None:
            if self._loop.is_closed():
                sock.close()
            else:
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(self._detach, sock)

    def _detach(self, sock: socket.socket) -> None:
        with contextlib.suppress(Exception):
            self._loop.remove_reader(sock.fileno())
        sock.close()
        if self._sock is sock:
            self._sock = None

    def _writer_gone(self, why: str) -> None:
        sock, process = self._sock, self._process
        self._sock = None
        self._process = None
        self.started = False  # until the next writer says hello
        if sock is not None:
            self._detach(sock)
        code = None
        if process is not None:
            # It closed its end or broke it: either it has exited, or it is of no use any more.
            if process.poll() is None:
                process.kill()
            code = process.wait()
        failed = StoreUnavailable(f"the writer process stopped ({why})")
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(failed)
        self._outbox.clear()
        self._outbox_bytes = 0
        self._sending = None
        if self._closing:
            return
        self.last_failure = time.monotonic()
        log.error("the writer process stopped (%s, exit code %s); starting another", why, code)
        self._restart = self._loop.call_later(_RESTART_SECONDS, self._spawn)

    # --- the hot path ------------------------------------------------------------------------

    def submit(self, item: Incoming, expires_at: float = 0.0) -> asyncio.Future[Receipt]:
        future: asyncio.Future[Receipt] = self._loop.create_future()
        if self._sock is None:
            future.set_exception(StoreUnavailable("the writer process is restarting"))
            return future
        self._seq += 1
        self._pending[self._seq] = future
        outbox = self._outbox
        outbox.append(
            (
                self._seq,
                expires_at,
                item.source,
                item.event,
                item.client_ip,
                item.headers,
                item.body,
                item.recovered,
            )
        )
        self._outbox_bytes += len(item.body)
        # Not while a frame waits for the socket to drain: the flush already set for then sends.
        if len(outbox) >= FLUSH_EVERY and self._sending is None:
            self._send_now(blocking=False)
        elif not self._flush_scheduled:
            self._schedule_flush()
        return future

    def _schedule_flush(self) -> None:
        # One send for everything the requests of this loop iteration queued.
        self._flush_scheduled = True
        self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._send_now(blocking=False)

    def _send_now(self, blocking: bool) -> None:
        sock = self._sock
        if sock is None:
            return
        while True:
            if self._sending is None:
                if not self._outbox:
                    return
                self._sending = memoryview(frame(self._next_frame()))
            try:
                sent = sock.send(self._sending)
            except BlockingIOError:
                if not blocking:
                    # The writer is behind by megabytes: try again when the socket drains, and
                    # meanwhile let go of what nobody waits for any more.
                    self._drop_expired()
                    self._loop.call_later(0.001, self._flush)
                    self._flush_scheduled = True
                    return
                select.select([], [sock], [], 1.0)
                continue
            except OSError as error:
                self._writer_gone(f"send failed: {type(error).__name__}")
                return
            if sent == len(self._sending):
                self._sending = None
            else:
                self._sending = self._sending[sent:]

    def _next_frame(self) -> list[tuple[Any, ...]]:
        """The oldest notifications of the outbox, up to FRAME_BYTES of bodies (at least one).

        Usually the whole outbox: a loop iteration's notifications are a few dozen kilobytes.
        After a stall it holds up to ``max_inflight_bytes``, and one frame of all of it would be
        a copy of all of it.
        """
        outbox = self._outbox
        if self._outbox_bytes <= FRAME_BYTES:
            self._outbox, self._outbox_bytes = [], 0
            return outbox
        taken = size = 0
        while taken < len(outbox) and (taken == 0 or size + len(outbox[taken][6]) <= FRAME_BYTES):
            size += len(outbox[taken][6])
            taken += 1
        chunk = outbox[:taken]
        del outbox[:taken]
        self._outbox_bytes -= size
        return chunk

    def _drop_expired(self) -> None:
        """Drop the notifications at the head of the outbox whose senders were answered 503 (ack
        deadline): their bodies are released now, not when the writer reads again. They expire
        in the order they came when every request has the same deadline (ingest's); one that
        never expires (no deadline) keeps those behind it until it is sent."""
        outbox = self._outbox
        now = time.monotonic()
        expired = 0
        for entry in outbox:
            expires_at = entry[1]
            if not expires_at or expires_at >= now:
                break
            expired += 1
        if not expired:
            return
        gone = StoreUnavailable("the writer did not take it before the ack deadline")
        for entry in outbox[:expired]:
            self._outbox_bytes -= len(entry[6])
            future = self._pending.pop(entry[0], None)
            if future is not None and not future.done():
                future.set_exception(gone)
        del outbox[:expired]

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            frames = self._inbox.receive(sock)
        except BlockingIOError:
            return
        except OSError as error:
            self._writer_gone(f"receive failed: {type(error).__name__}")
            return
        if frames is None:
            self._writer_gone("end of stream")
            return
        for payload in frames:
            if isinstance(payload, dict):  # the writer's hello
                self.started = True
                continue
            reason, receipts, commit = payload
            if reason is REFUSED:
                self._refused(receipts)
                continue
            if reason is None:
                self.last_success = time.monotonic()
                if commit is not None:
                    record_commit(*commit)
            elif reason != EXPIRED:
                self.last_failure = time.monotonic()
            failed = StoreUnavailable(reason) if reason else None
            for seq, note_id, duplicate_of in receipts:
                future = self._pending.pop(seq, None)
                if future is None or future.done():  # gave up waiting: already answered 503
                    continue
                if failed is None:
                    future.set_result(Receipt(note_id, duplicate_of))
                else:
                    future.set_exception(failed)

    def _refused(self, receipts: list[tuple[int, str, None]]) -> None:
        for seq, why, _ in receipts:
            future = self._pending.pop(seq, None)
            if future is not None and not future.done():
                future.set_exception(RefusedByStore(why))
