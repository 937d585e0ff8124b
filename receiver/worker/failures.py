"""What an attempt of a handler left behind: its outcome, and when it failed, the error's type,
message and traceback, bounded so that every attempt's record can be written.

The traceback keeps its innermost frames, where the handler raised, and drops the outer ones (the
worker's own frames, then the handler's callers) first: with ``TRACEBACK_CHARS`` of 4,000 a
traceback through httpx and the Portal client keeps its last 10 to 20 frames, about 3 KiB in the
``job_attempts`` row.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from receiver import storable

TRACEBACK_CHARS = 4000
MESSAGE_CHARS = 2000
TYPE_CHARS = 200
LEFT_OUT = "  ... {count} outer lines left out ...\n"


class AttemptOutcome(StrEnum):
    DONE = "done"  # the handler returned
    RETRY = "retry"  # it raised Retry: run again later, as it asked
    FAILED = "failed"  # it raised; it will be run again
    DEAD = "dead"  # it raised, or cannot run, and will not be run again: a dead letter
    TIMEOUT = "timeout"  # it ran past its timeout and was cancelled


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt of one job, as ``job_attempts`` keeps it."""

    started_at: datetime
    finished_at: datetime
    outcome: AttemptOutcome
    error_type: str | None = None
    message: str | None = None
    traceback: str | None = None


def error_type(error: BaseException) -> str:
    """``module.Name`` of the error's class (``builtins.`` left out), bounded."""
    kind = type(error)
    module = "" if kind.__module__ == "builtins" else f"{kind.__module__}."
    return storable.safe(f"{module}{kind.__qualname__}", TYPE_CHARS)


def message(error: BaseException) -> str:
    return storable.safe(str(error), MESSAGE_CHARS)


def bounded_traceback(error: BaseException, limit: int = TRACEBACK_CHARS) -> str:
    """``error``'s traceback (its causes first, as Python prints them), at most ``limit``
    characters: the outer lines are left out first and said so, the innermost frames and the
    error's own line are kept. Escaped for the store (``storable.safe``): no NUL."""
    text = storable.safe("".join(traceback.format_exception(error)))
    if len(text) <= limit:
        return text
    lines = text.splitlines(keepends=True)
    head = lines[0] if lines[0].startswith("Traceback") else ""
    kept: list[str] = []
    size = len(head) + len(LEFT_OUT.format(count=len(lines)))
    for line in reversed(lines[1 if head else 0 :]):
        if size + len(line) > limit:
            break
        kept.append(line)
        size += len(line)
    if not kept:  # the error's own line alone is over the limit: its end is cut
        return storable.safe(lines[-1], limit)
    left_out = len(lines) - len(kept) - (1 if head else 0)
    return head + LEFT_OUT.format(count=left_out) + "".join(reversed(kept))
