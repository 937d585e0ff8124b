"""Hostile text stored as a sender could have it stored (event, headers, body), then shown: the
`inbox list` table, `inbox list --json`, `inbox show` and log lines carry no raw control
character, line separator or bidirectional mark, and the JSON still gives back every value."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from receiver import logs
from receiver.runtime.cli import main
from receiver.safetext import for_terminal
from receiver.sources import dedup_key
from receiver.store import Incoming, Store

# Retitles the terminal, returns to the start of the line and forges a row, erases it, breaks the
# line the Unicode ways (U+2028, U+0085 NEL, U+2029), a C1 CSI (0x9b) and a right-to-left override.
HOSTILE = (
    "duimp.registro\x1b]0;pwned\x07\r\n01FORGED  2026-01-01 00:00:00  pucomex   forged"
    "\x1b[2K\u2028\u0085\x9b31m\u202ehidden\u2029\x7f\x0b\x0c\x1c"
)
HEADER = "\x9b2J\u2028\x1b[8mgone"  # bytes 0x80-0xff arrive as latin-1: C1 controls included
BODY = '{"evento":"x\u2028y\u0085z\x1b[2J","nome":"Carga Horária"}'.encode()

UNSAFE = {chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]} | set(
    "\u061c\u200e\u200f\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


def raw_unsafe(text: str, allowed: str = "\n") -> set[str]:
    return {char for char in text if char in UNSAFE and char not in allowed}


@pytest.fixture
def hostile(store: Store, tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    """Three notifications with hostile text stored; the config file and their ids."""
    items = [
        Incoming("pucomex", HOSTILE, "203.0.113.7", {"x-ok": "sim"}, b"{}"),
        Incoming("sintegre", None, "198.51.100.10", {"x-evil": HEADER}, BODY),
        Incoming("invoicy", "nfe.x\u2028\x85y", "192.0.2.1", {}, b"\xff\x1b[2J not utf-8"),
    ]
    receipts = store.append_now(
        [item._replace(dedup_key=dedup_key(item.source, item.body)) for item in items]
    )
    config = tmp_path / "receiver.yaml"
    config.write_text(yaml.safe_dump({"database_url": store.url}))
    yield config, [receipt.id for receipt in receipts]


def cli(config: Path, *args: str) -> str:
    result = CliRunner().invoke(main, [*args, "--config", str(config)])
    assert result.exit_code == 0, result.output
    return result.output


def test_the_table_escapes_every_column(hostile: tuple[Path, list[str]]) -> None:
    config, ids = hostile
    output = cli(config, "inbox", "list")
    assert raw_unsafe(output) == set()
    lines = output.splitlines()
    assert len(lines) == 3, "one row per notification, however the text tries to break it"
    by_id = {line.split()[0]: line for line in lines}
    assert set(by_id) == set(ids)
    assert "\\x1b]0;pwned\\x07\\x0d\\x0a01FORGED" in by_id[ids[0]]
    assert "\\u2028\\x85\\x9b31m\\u202ehidden\\u2029\\x7f" in by_id[ids[0]]


def test_json_lines_are_one_object_per_line_by_any_reckoning(
    hostile: tuple[Path, list[str]],
) -> None:
    config, ids = hostile
    output = cli(config, "inbox", "list", "--json")
    assert raw_unsafe(output) == set()
    lines = output.splitlines()  # splits at U+2028, U+0085, \x1c... too
    assert len(lines) == 3
    by_id = {json.loads(line)["id"]: (line, json.loads(line)) for line in lines}
    assert set(by_id) == set(ids)
    rows = [by_id[note_id][1] for note_id in ids]
    # Escaped, not altered: every value comes back exactly.
    assert rows[0]["event"] == HOSTILE
    assert rows[1]["headers"]["x-evil"] == HEADER
    assert rows[1]["body"] == BODY.decode() and rows[1]["body_base64"] is False
    assert "Carga Horária" in by_id[ids[1]][0], "readable text stays readable"
    assert rows[2]["event"] == "nfe.x\u2028\x85y" and rows[2]["body_base64"] is True


def test_show_escapes_and_round_trips(hostile: tuple[Path, list[str]]) -> None:
    config, ids = hostile
    for note_id in ids:
        output = cli(config, "inbox", "show", note_id)
        assert raw_unsafe(output) == set()
        shown = json.loads(output)
        assert shown["id"] == note_id
    assert json.loads(cli(config, "inbox", "show", ids[0]))["event"] == HOSTILE


def log_with(formatter_from_configure: bool) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    if formatter_from_configure:
        root = logging.getLogger()
        kept, level = list(root.handlers), root.level
        try:
            logs.configure("INFO", ["tok-canary-123456"])
            (handler,) = root.handlers
        finally:
            root.handlers[:] = kept
            root.setLevel(level)
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(stream)
    else:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logs.SafeFormatter(logs.LINE_FORMAT))
    logger = logging.getLogger(f"receiver.test.safe.{formatter_from_configure}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream


@pytest.mark.parametrize("from_configure", [True, False])
def test_a_log_line_cannot_be_forged_or_hidden(from_configure: bool) -> None:
    logger, stream = log_with(from_configure)
    logger.warning("handler failed on event %s", HOSTILE)
    try:
        raise ValueError(f"bad body {HEADER} tok-canary-123456\nFAKE 2026 ERROR receiver: forged")
    except ValueError:
        logger.exception("job %s failed", "01X\r\nFAKE")
    text = stream.getvalue()
    assert raw_unsafe(text) == set()
    lines = text.splitlines()
    assert lines[0].endswith("handler failed on event " + for_terminal(HOSTILE))
    assert lines[1].endswith("job 01X\\x0d\\x0aFAKE failed")
    assert lines[2] == "Traceback (most recent call last):"
    # A traceback keeps its own lines; what the message carried is escaped within them.
    assert any("bad body \\x9b2J\\u2028\\x1b[8mgone" in line for line in lines)
    if from_configure:
        assert "tok-canary-123456" not in text


def test_output_without_anything_hostile_is_unchanged(store: Store, tmp_path: Path) -> None:
    body = '{"evento":"duimp.registro","nome":"Ação"}'.encode()
    (receipt,) = store.append_now(
        [Incoming("pucomex", "duimp.registro", "203.0.113.7", {}, body, dedup_key("p", body))]
    )
    config = tmp_path / "receiver.yaml"
    config.write_text(yaml.safe_dump({"database_url": store.url}))
    (line,) = cli(config, "inbox", "list", "--json").splitlines()
    expected: dict[str, Any] = json.loads(line)
    assert line == json.dumps(expected, ensure_ascii=False)
    assert expected["id"] == receipt.id and expected["body"] == body.decode()
