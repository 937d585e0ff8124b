"""The frames between a serving process and its writer process, and the reading of them.

Frames on the socket: a 4-byte little-endian length, then a ``marshal`` payload. Both ends are the
same interpreter running the same code, which is what marshal needs; nothing else writes there.

- parent -> writer, first frame: the settings ``{"url", "max_batch", "max_wait_ms",
  "timeout_seconds", "log_level", "log_format"}``;
- parent -> writer, then one per send: a list of notifications ``(seq, expires_at, source, event,
  client_ip, headers, body, recovered)``; ``expires_at`` is on ``time.monotonic()``
  (CLOCK_MONOTONIC, the same in every process), 0 for never: the writer skips a notification whose
  sender has already been answered 503, as the thread does;
- writer -> parent, first: ``{"pid": ...}`` once it can take notifications (readiness waits
  for it: a serving process whose writer is still starting is not ready);
- writer -> parent, then one per batch: ``(reason, [(seq, id, duplicate_of), ...], commit)``,
  where ``reason`` is None (stored) or why nobody in the batch was stored (then ``id`` is ""); ""
  for those that expired before their commit; False for those the store refused one by one while
  the rest of their batch was stored (then ``id`` is why), sent beside the batch's frame of the
  stored. ``commit`` is ``(seconds, notifications)`` of the commit on the frame of the stored
  (the serving process shows them as receiver_store_commit_seconds and _batch_size), else None.
"""

from __future__ import annotations

import marshal
import socket
from typing import Any

LENGTH = 4
# The reason given for notifications whose sender was answered 503 before their commit began:
# not stored, and not a store failure either.
EXPIRED = ""
# The reason given for notifications the store refused for their own values (RefusedByStore):
# not stored, and not a store failure either: the rest of their batch was stored.
REFUSED = False


def frame(payload: Any) -> bytes:
    data = marshal.dumps(payload)
    return len(data).to_bytes(LENGTH, "little") + data


def frames(buffer: bytearray) -> list[Any]:
    """Every complete frame at the start of ``buffer``, decoded; removes them from it."""
    out: list[Any] = []
    view = memoryview(buffer)
    offset = 0
    end = len(buffer)
    try:
        while end - offset >= LENGTH:
            size = int.from_bytes(view[offset : offset + LENGTH], "little")
            if end - offset - LENGTH < size:
                break
            start = offset + LENGTH
            # Our own socketpair, written only by our own code: not untrusted input.
            out.append(marshal.loads(view[start : start + size]))  # noqa: S302
            offset = start + size
    finally:
        view.release()
    if offset:
        del buffer[:offset]
    return out


class Inbound:
    """Bytes read from the socket until they make whole frames.

    Read through one scratch buffer made once: ``sock.recv(n)`` allocates n bytes on every call
    and shrinks them after, and for n = 1 MiB that is an mmap and a munmap each time: 29 us per
    40 KB frame, against 5 us with ``recv_into`` and a copy.
    """

    SCRATCH = 256 * 1024

    def __init__(self) -> None:
        self._pending = bytearray()
        self._scratch = memoryview(bytearray(self.SCRATCH))

    def receive(self, sock: socket.socket) -> list[Any] | None:
        """Read once from ``sock`` (its errors propagate): the frames now whole; None at its end."""
        count = sock.recv_into(self._scratch)
        if not count:
            return None
        self._pending += self._scratch[:count]
        return frames(self._pending)

    def clear(self) -> None:
        self._pending.clear()
