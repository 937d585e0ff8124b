"""`loadtests/e2e.py`, small: the whole path with the receiver as `receiver serve` in a process of
its own, and the JSON record of the run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.acceptance

SCRIPT = Path(__file__).resolve().parents[3] / "loadtests" / "e2e.py"


def test_the_end_to_end_run_uses_receiver_serve_and_records_itself(tmp_path: Path) -> None:
    record = tmp_path / "run.json"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--notifications", "40", "--record", str(record)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "receiver serve started" in result.stdout
    found = json.loads(record.read_text())
    assert found["ok"] is True, found["problems"]
    assert found["receiver"] == "receiver serve"
    assert found["notifications"] >= 40
    assert found["stored"] == found["handled"] == found["duimps_kept"] == found["notifications"]
    for name in ("emit_to_stored_ms", "stored_to_handled_ms"):
        assert found[name]["count"] == found["notifications"]
        assert 0 < found[name]["p50"] <= found[name]["p99"] <= found[name]["max"]
