"""What the store asks of a group commit, whichever runs it: the ``Committer`` protocol, the
notifications it takes (``Incoming``), what it answers (``Receipt``), and its health.

Two committers stand behind it, as procrastinate's connectors stand behind its ``BaseConnector``:

- ``receiver.store.process.ProcessCommitter``: a writer process beside the serving process, fed
  over a Unix socket; what ``receiver serve`` uses (``group_commit.writer: process``);
- ``receiver.store.thread.ThreadCommitter``: a writer thread of the serving process
  (``group_commit.writer: thread``, ``:memory:`` databases, tests that inject faults into the
  engine).

Either way a notification's future resolves to its ``Receipt`` only after the commit that holds
its row has returned, or fails with ``StoreUnavailable`` (``RefusedByStore`` for a row the store
refused alone, its batch stored).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import NamedTuple, Protocol


class Incoming(NamedTuple):
    """A notification that passed every check and is waiting for its commit.

    A named tuple, not a frozen dataclass: one is made for every request on the event loop, and
    the frozen dataclass's ``__init__`` (``object.__setattr__`` per field) took 1.1 us against
    0.45 us for this (with keywords; 0.25 positional), with the same fields, constructor and
    immutability.
    """

    source: str
    event: str | None
    client_ip: str
    # As received (name and value bytes, credentials already removed), or already decoded.
    # Ingest hands the raw pairs over: decoding them is the writer's work, not the event loop's.
    headers: Sequence[tuple[bytes, bytes]] | Mapping[str, str]
    body: bytes
    # sources.dedup_key (64 hex digits, stored as the 32 bytes they spell); None: the writer
    # computes it, off the event loop.
    dedup_key: str | None = None
    recovered: bool = False


class Receipt(NamedTuple):
    """Where a notification was stored; a named tuple for the same reason as ``Incoming``."""

    id: str
    duplicate_of: str | None

    @property
    def duplicate(self) -> bool:
        return self.duplicate_of is not None


def record_commit(seconds: float, notifications: int) -> None:
    """Count one group commit of ingest (on the serving process's event loop, which reads them)."""
    # Imported here: the writer process imports this module for Incoming and Receipt and counts
    # nothing itself; prometheus_client cost it 2 MiB (an import once cached: ~0.3 us a commit).
    from receiver import metrics

    metrics.COMMIT_SECONDS.observe(seconds)
    metrics.BATCH_SIZE.observe(notifications)


class CommitHealth:
    """When ingest's commits last succeeded and failed, for readiness."""

    def __init__(self) -> None:
        # monotonic times of the last commit that succeeded and the last that failed (0: never)
        self.last_success = 0.0
        self.last_failure = 0.0
        self.started = True  # able to take notifications (a writer process says when it is)

    def failing(self, within: float) -> bool:
        """The latest commit failed, less than ``within`` seconds ago.

        Forgotten after ``within`` so that a load balancer that stopped sending traffic on our
        503 sends some again: the next real commit is the probe, and sets it anew if it fails.
        """
        failed = self.last_failure > self.last_success
        return failed and time.monotonic() - self.last_failure < within


class Committer(Protocol):
    """A group commit: one transaction (one fsync) for the notifications that queued meanwhile."""

    # monotonic times of the last commit that succeeded and the last that failed (0: never); the
    # store sets last_failure too, when a commit outlives the ack deadline.
    last_success: float
    last_failure: float
    # Able to take notifications (a writer process is not, while it starts).
    started: bool

    @property
    def pid(self) -> int | None:
        """The writer process's id, or None (a thread, or a process about to start)."""
        ...

    def submit(self, item: Incoming, expires_at: float = 0.0) -> asyncio.Future[Receipt]:
        """Queue ``item`` for a commit. ``expires_at`` (``time.monotonic()``, 0: never) is when
        its sender stops waiting: it is not stored if its commit has not begun by then."""
        ...

    def failing(self, within: float) -> bool:
        """The latest commit failed, less than ``within`` seconds ago."""
        ...

    def close(self) -> None:
        """Commit what is queued, then stop. Any thread may call it."""
        ...
