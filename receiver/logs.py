"""Logging set-up: one redaction filter (configured secrets never reach a log line), the fields of
the job being run on every line written while it runs, and two formats (``log_format``): text,
one line per record with the fields as ``key=value``, and JSON, one object per line
(python-json-logger). Both escape what a sender could use to forge or hide log lines.

``job_fields`` is set by the worker for each handler attempt (a context variable: each job runs
in a task of its own), so that every line the worker and the handler write meanwhile, through
any logger, carries ``notification_id``, ``source``, ``event``, ``handler`` and ``attempt``.
``OutageLog`` says that something is down once, and once that it is back, instead of a line
per failed attempt.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from receiver.safetext import for_terminal, json_dumps, keeping_lines

REDACTED = "[redacted]"
FIELDS = ("notification_id", "source", "event", "handler", "attempt")

job_fields: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "receiver_job_fields", default=None
)


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


class JobFields(logging.Filter):
    """Puts the fields of the job being run (``job_fields``) on the record, when there is one."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = job_fields.get()
        if fields is not None:
            for name, value in fields.items():
                setattr(record, name, value)
        return True


def _field_text(value: Any) -> str:
    text = for_terminal(str(value))
    if not text or any(char in text for char in ' ="'):
        return json_dumps(text)
    return text


class SafeFormatter(logging.Formatter):
    """One record, one line: a message's control characters, line breaks (U+2028, U+0085 and the
    like too) and bidirectional marks are written as visible escapes, so an event, a header or an
    exception message quoting a body can neither forge a line nor drive the terminal. A
    traceback keeps its own line breaks, every other such character escaped. The job's fields
    follow the message as ``key=value``."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = for_terminal(record.message)
        line = super().formatMessage(record)
        fields = [
            f"{name}={_field_text(getattr(record, name))}"
            for name in FIELDS
            if getattr(record, name, None) is not None
        ]
        return f"{line} {' '.join(fields)}" if fields else line

    def formatException(self, ei: Any) -> str:
        return keeping_lines(super().formatException(ei))

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_text:  # made already (by RedactSecrets): escaping twice changes nothing
            record.exc_text = keeping_lines(record.exc_text)
        return super().format(record)

    def formatStack(self, stack_info: str) -> str:
        return keeping_lines(super().formatStack(stack_info))


LINE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def json_formatter() -> logging.Formatter:
    """One JSON object per record: ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``,
    the job's fields when there are, ``exc_info`` (the traceback) when there is one, and any
    ``extra`` given to the call. Written by ``safetext.json_dumps``: every line separator and
    control character escaped, so an object is one line by any reckoning."""
    return JsonFormatter(
        "%(levelname)s %(name)s %(message)s",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp="time",
        json_serializer=json_dumps,
        # uvicorn's colour codes would only be noise in a log store.
        reserved_attrs=[*RESERVED_ATTRS, "color_message"],
    )


_format = "text"


def current_format() -> str:
    """The format ``configure`` last set (a writer process is told to use the same)."""
    return _format


def configure(level: str, secrets: Iterable[str], log_format: str = "text") -> None:
    global _format
    _format = log_format
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(json_formatter() if log_format == "json" else SafeFormatter(LINE_FORMAT))
    handler.addFilter(JobFields())
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


class OutageLog:
    """Something (the store) going down, logged once, and coming back, logged once with how
    long it was away and how many failures it cost: not a line per failed attempt (a worker
    polls twice a second, ingest fails every request). Used by one thread."""

    def __init__(
        self, logger: logging.Logger, what: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._log = logger
        self._what = what
        self._clock = clock
        self.down_since: float | None = None
        self.failures = 0

    def down(self, reason: str) -> None:
        self.failures += 1
        if self.down_since is None:
            self.down_since = self._clock()
            self._log.error("%s: %s (said once until it recovers)", self._what, reason)

    def up(self) -> None:
        if self.down_since is None:
            return
        away = self._clock() - self.down_since
        self._log.warning(
            "%s: recovered after %.1f s (%d failures meanwhile)", self._what, away, self.failures
        )
        self.down_since, self.failures = None, 0
