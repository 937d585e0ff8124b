"""`receiver demo`, run as a user would: exit code and a summary that adds up."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.acceptance


def figures(output: str) -> dict[str, int]:
    found = {}
    for line in output.splitlines():
        match = re.match(r"^(\S.*?)\s{2,}(\d+)$", line)
        if match:
            found[match.group(1)] = int(match.group(2))
    return found


def test_demo_runs_the_whole_system_end_to_end(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "receiver", "demo", "--duimps", "15"],
        cwd=tmp_path,  # nothing of the checkout's folder is needed, and nothing is left behind
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    shown = figures(result.stdout)
    emitted = shown["events emitted by the Portal simulator"]
    assert emitted >= 30
    assert shown["notifications received by the receiver"] == emitted
    assert shown["stored (originals, acknowledged with 200)"] == emitted
    assert shown["handled by handlers.duimp"] == emitted
    assert shown["Duimp records fetched back and kept"] == emitted
    assert shown["failed deliveries (endpoint answering 500)"] >= 1
    assert (
        shown["failure records found by the failure search"]
        == 3 * shown["failed deliveries (endpoint answering 500)"]
    )
    assert shown["Duimps whose consultation matches their last event"] == 15
    # The summary names the Portal's event ids, with what became of each one.
    table = re.findall(r"^(dimp-[a-z-]+)\s+(\d+)\s+(\d+)\s+(\d+)$", result.stdout, re.MULTILINE)
    assert {row[0] for row in table} == {
        "dimp-registro-import",
        "dimp-retifica-import",
        "dimp-situacao-import",
        "dimp-diag-import",
    }
    assert all(row[1] == row[2] == row[3] for row in table)
    assert sum(int(row[1]) for row in table) == emitted
    assert result.stdout.rstrip().endswith("RESULT: ok")
    assert list(tmp_path.iterdir()) == []
