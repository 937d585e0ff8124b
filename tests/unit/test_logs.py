"""Log lines in both formats: the job's fields, escaping, redaction; an outage said twice."""

from __future__ import annotations

import json
import logging

import pytest

from receiver import logs


def record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("receiver.test", logging.WARNING, __file__, 1, message, args, None)


def formatted(log_format: str, rec: logging.LogRecord, secrets: tuple[str, ...] = ()) -> str:
    handler = logging.StreamHandler()
    handler.setFormatter(
        logs.json_formatter() if log_format == "json" else logs.SafeFormatter(logs.LINE_FORMAT)
    )
    handler.addFilter(logs.JobFields())
    handler.addFilter(logs.RedactSecrets(secrets))
    assert handler.filter(rec)
    return handler.format(rec)


FIELDS = {
    "notification_id": "01M8QHPW32TZVD2GS4WMZHEXQC",
    "source": "pucomex",
    "event": "dimp registro\u2028forged",
    "handler": "handlers.duimp.fetch_duimp",
    "attempt": 2,
}


def test_json_lines_carry_the_job_fields_escaped_and_redacted() -> None:
    token = logs.job_fields.set(FIELDS)
    try:
        line = formatted(
            "json", record("got %s\n\x1b[2J", "s3cr3t-value-123"), ("s3cr3t-value-123",)
        )
    finally:
        logs.job_fields.reset(token)
    assert len(line.splitlines()) == 1  # U+2028 and the newline escaped: one line by any count
    parsed = json.loads(line)
    assert {key: parsed[key] for key in FIELDS} == FIELDS
    assert parsed["message"] == "got [redacted]\n\x1b[2J"  # escaped in the line, exact once read
    assert parsed["level"] == "WARNING" and parsed["logger"] == "receiver.test"
    assert "time" in parsed


def test_text_lines_carry_the_job_fields_as_key_value() -> None:
    token = logs.job_fields.set(FIELDS)
    try:
        line = formatted("text", record("handled"))
    finally:
        logs.job_fields.reset(token)
    assert len(line.splitlines()) == 1
    assert "notification_id=01M8QHPW32TZVD2GS4WMZHEXQC source=pucomex" in line
    assert 'event="dimp registro\\\\u2028forged"' in line  # escaped, then quoted
    assert line.endswith("handler=handlers.duimp.fetch_duimp attempt=2")


def test_a_line_outside_a_job_has_no_job_fields() -> None:
    assert "notification_id" not in json.loads(formatted("json", record("plain")))
    assert formatted("text", record("plain")).endswith("plain")


def test_an_outage_is_said_once_when_it_starts_and_once_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    outage = logs.OutageLog(logging.getLogger("receiver.test"), "the store", clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="receiver.test"):
        for _ in range(50):  # a worker polling twice a second for 25 s
            outage.down("connection refused")
            now[0] += 0.5
        outage.up()
        outage.up()
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "the store: connection refused (said once until it recovers)",
        "the store: recovered after 25.0 s (50 failures meanwhile)",
    ]
