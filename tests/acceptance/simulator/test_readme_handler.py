"""The README's handler section, done as it says, in a folder outside the project: the handler
and its test are the README's own code blocks (so they cannot drift), `pytest` passes on them in
a subprocess, and `receiver dev --handlers my_handlers` (the README's command) runs the handler
against the simulator, which keeps its row and logs its line; Ctrl-C stops it cleanly."""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import pytest

pytestmark = pytest.mark.acceptance

ROOT = Path(__file__).parents[3]
BIN = Path(sys.executable).parent
SECTION_START = "### From an empty folder to a tested handler in 5 minutes"
EXAMPLE = re.compile(r"<!-- handler-example: (\S+) -->\n```python\n(.*?)```\n", re.DOTALL)


def section() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index(SECTION_START)
    return readme[start : readme.index("\n### ", start + len(SECTION_START))]


def commands(text: str) -> list[str]:
    """The lines of the section's shell blocks that run the venv's tools."""
    blocks = re.findall(r"```sh\n(.*?)```", text, re.DOTALL)
    return [line for block in blocks for line in block.splitlines() if line.startswith(".venv/")]


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RECEIVER_CONFIG")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_readme_command(line: str, folder: Path, stdout: int | IO[bytes]) -> subprocess.Popen[bytes]:
    # `.venv/bin/X` of the README is this test's venv: the package is installed there.
    argv = line.split()
    argv[0] = str(BIN / Path(argv[0]).name)
    return subprocess.Popen(
        argv, cwd=folder, env=environment(), stdout=stdout, stderr=subprocess.STDOUT
    )


def test_the_readme_handler_section_works_as_written(tmp_path: Path) -> None:
    text = section()
    files = dict(EXAMPLE.findall(text))
    assert set(files) == {"my_handlers.py", "test_my_handlers.py"}
    folder = tmp_path / "sefaz-handlers"
    folder.mkdir()
    assert not folder.resolve().is_relative_to(ROOT)
    for name, code in files.items():
        (folder / name).write_text(code)
    pytest_line, dev_line = commands(text)[-2:]
    assert pytest_line == ".venv/bin/pytest -q"
    assert dev_line == ".venv/bin/receiver dev --handlers my_handlers"

    tested = run_readme_command(pytest_line, folder, subprocess.PIPE)
    output = tested.communicate(timeout=120)[0].decode()
    assert tested.returncode == 0, output
    assert "2 passed" in output

    log = tmp_path / "dev.log"
    with log.open("wb") as sink:
        dev = run_readme_command(dev_line, folder, sink)
    kept: Path | None = None
    try:
        deadline = time.monotonic() + 90
        while "kept cleared Duimp" not in log.read_text():
            assert dev.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        shown = log.read_text()
        kept = Path(re.search(r"^folder (\S+) ", shown, re.MULTILINE)[1])  # type: ignore[index]
        line = next(line for line in shown.splitlines() if "kept cleared Duimp" in line)
        assert "handler=my_handlers.keep_cleared_duimp attempt=1" in line
        numero = re.search(r"kept cleared Duimp (\S+)", line)[1]  # type: ignore[index]
        with sqlite3.connect(kept / "receiver.db") as db:
            rows = db.execute(
                "select key, value from handler_results where kind = 'cleared-duimp'"
            ).fetchall()
        assert [key for key, _ in rows] == [numero]
        assert "situacao" in rows[0][1]
        assert "receiver dispatcher emit duimp.desembaraco --json" in shown
        dev.send_signal(signal.SIGINT)  # Ctrl-C, as the README says
        assert dev.wait(timeout=60) == 0, log.read_text()
        assert f"stopped; the folder is kept: {kept}" in log.read_text()
        assert "Traceback" not in log.read_text()
    finally:
        if dev.poll() is None:
            dev.kill()
            dev.wait(timeout=10)
        if kept is not None:
            shutil.rmtree(kept, ignore_errors=True)
