"""SQLite's WAL under sustained commits, on a real file: the writer's group commit keeps it short.

SQLite rewinds the WAL only when a write transaction begins with every frame already copied into
the database; a background checkpoint alone never gets there while commits continue, and the WAL
grew until a commit stalled to checkpoint it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from receiver.ids import new_id
from receiver.sources import dedup_key
from receiver.store import Incoming, Store
from receiver.store.writer import BatchWriter
from tests.conftest import migrated

FRAME_BYTES = 24 + 4096  # a WAL frame: its header and one page


def wal_frames_per_notification(
    folder: Path, monkeypatch: pytest.MonkeyPatch, rewind: bool
) -> float:
    """Commit for two seconds; the WAL's longest length in frames, per notification stored."""
    monkeypatch.setattr(BatchWriter, "CHECKPOINT_SECONDS", 0.01)
    monkeypatch.setattr(BatchWriter, "REWIND_FRAMES", 200)
    monkeypatch.setattr(BatchWriter, "AUTOCHECKPOINT_PAGES", 1_000_000)  # no stalled commit
    folder.mkdir()
    store = Store(f"sqlite:///{folder / 'wal.db'}")
    migrated(store)
    writer = BatchWriter(store.engine)
    try:
        stored = commit_for(writer, 2.0, rewind)
        # Its longest length: a rewound WAL is written over from the start, never shortened.
        # (Read before closing: the last connection to close empties it.)
        frames = (folder / "wal.db-wal").stat().st_size / FRAME_BYTES
        with store.reading() as conn:
            count = conn.exec_driver_sql("SELECT count(*) FROM notifications").scalar_one()
    finally:
        writer.close()
        store.close()
    assert stored > 2_000 and count == stored
    return frames / stored


def commit_for(writer: BatchWriter, seconds: float, rewind: bool) -> int:
    """Commit batches of 20 notifications back to back for ``seconds``; how many were stored."""
    stored = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        bodies = [os.urandom(600) for _ in range(20)]
        batch = [
            (Incoming("pucomex", None, "127.0.0.1", {}, b, dedup_key("pucomex", b)), new_id())
            for b in bodies
        ]
        receipts = writer.commit(batch)
        assert isinstance(receipts, list)
        stored += len(receipts)
        if rewind:
            writer.finish_checkpoint()
    return stored


def test_the_wal_is_rewound_while_commits_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Background checkpoints alone: every frame ever committed is still in the file.
    alone = wal_frames_per_notification(tmp_path / "alone", monkeypatch, rewind=False)
    # The writer finishing each background round: the file is written over again and again.
    # Measured here: 0.036 frames per notification against 1.0-1.7, under load or not.
    finished = wal_frames_per_notification(tmp_path / "finished", monkeypatch, rewind=True)
    assert finished * 5 < alone, (finished, alone)
