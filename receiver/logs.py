"""Logging set-up: one redaction filter (configured secrets never reach a log line) and one
formatter that escapes what a sender could use to forge or hide log lines."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any

from receiver.safetext import for_terminal, keeping_lines

REDACTED = "[redacted]"


class RedactSecrets(logging.Filter):
    """Replaces every configured secret in the formatted message and its arguments."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        # Longest first, so a secret that contains another is removed whole.
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        cleaned = message
        for secret in self._secrets:
            cleaned = cleaned.replace(secret, REDACTED)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            for secret in self._secrets:
                text = text.replace(secret, REDACTED)
            record.exc_text, record.exc_info = text, None
        return True


class SafeFormatter(logging.Formatter):
    """One record, one line: a message's control characters, line breaks (U+2028, U+0085 and the
    like too) and bidirectional marks are written as visible escapes, so an event, a header or an
    exception message quoting a body can neither forge a line nor drive the terminal. A
    traceback keeps its own line breaks, every other such character escaped."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = for_terminal(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        return keeping_lines(super().formatException(ei))

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_text:  # made already (by RedactSecrets): escaping twice changes nothing
            record.exc_text = keeping_lines(record.exc_text)
        return super().format(record)

    def formatStack(self, stack_info: str) -> str:
        return keeping_lines(super().formatStack(stack_info))


LINE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(level: str, secrets: Iterable[str]) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(SafeFormatter(LINE_FORMAT))
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
    # One line per request is the proxy's job; ours are the audit and error lines.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
