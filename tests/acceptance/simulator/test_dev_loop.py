"""`receiver dev` beyond the README's first run: `--event` and `--folder`, the printed
`receiver dispatcher emit` command reaching it, the worker restarted with the new code when the
handler file changes, and a module that stops importing said in one line until it is fixed."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.acceptance

BIN = Path(sys.executable).parent

HANDLER = """
from receiver import Context, DuimpEvent, Notification, Router

router = Router()


@router.on("pucomex", "dimp-registro-import", "duimp.desembaraco")
async def tell(note: Notification, ctx: Context) -> None:
    numero = note.parsed_as(DuimpEvent).identificacao.numero
    ctx.logger.info("VERSION-1 saw %s %s", note.event, numero)
"""


def environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RECEIVER_CONFIG")}


def wait_for(log: Path, text: str, process: subprocess.Popen[bytes], after: int = 0) -> str:
    deadline = time.monotonic() + 60
    while text not in log.read_text()[after:]:
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"{text!r} not seen:\n{log.read_text()}"
        time.sleep(0.1)
    return log.read_text()


def test_events_folder_emit_and_reload(tmp_path: Path) -> None:
    work = tmp_path / "project"
    work.mkdir()
    handler = work / "team_handlers.py"
    handler.write_text(HANDLER)
    folder = tmp_path / "dev-folder"
    log = tmp_path / "dev.log"
    argv = [str(BIN / "receiver"), "dev", "--handlers", "team_handlers"]
    argv += ["--event", "dimp-registro-import", "--folder", str(folder)]
    with log.open("wb") as sink:
        dev = subprocess.Popen(argv, cwd=work, env=environment(), stdout=sink, stderr=sink)
    try:
        shown = wait_for(log, "VERSION-1 saw dimp-registro-import", dev)
        assert "subscribed to dimp-registro-import\n" in shown  # --event: not duimp.desembaraco
        assert f"folder {folder} " in shown
        emit = re.search(r"^send another: (receiver dispatcher emit .*)$", shown, re.MULTILINE)
        assert emit is not None
        assert emit[1] == (
            f"receiver dispatcher emit dimp-registro-import --json {folder / 'dados.json'} "
            f"--config {folder / 'dispatcher.yaml'}"
        )

        handler.write_text(HANDLER.replace("VERSION-1", "VERSION-2"))
        mark = len(log.read_text())
        wait_for(log, "worker restarted with the new code", dev, after=mark)
        command = emit[1].split()
        command[0] = str(BIN / "receiver")
        sent = subprocess.run(
            command, env=environment(), capture_output=True, text=True, timeout=60
        )
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert "delivered" in sent.stdout
        wait_for(log, "VERSION-2 saw dimp-registro-import", dev, after=mark)

        handler.write_text(HANDLER + "\noops(\n")
        mark = len(log.read_text())
        shown = wait_for(log, "cannot be loaded, waiting for a fix", dev, after=mark)
        assert "SyntaxError" in shown[mark:]
        handler.write_text(HANDLER)
        wait_for(log, "worker restarted with the new code", dev, after=mark)

        dev.send_signal(signal.SIGTERM)
        assert dev.wait(timeout=60) == 0, log.read_text()
    finally:
        if dev.poll() is None:
            dev.kill()
            dev.wait(timeout=10)
    assert (folder / "receiver.db").exists() and (folder / "receiver.yaml").exists()
    assert "Traceback" not in log.read_text()
