"""The layers hold, and ``lint-imports`` (run by .ci/run) fails on a deliberate violation of each
contract: the package is copied to a temporary folder, one import is planted in the copy, and
import-linter runs there with the project's own contracts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(folder: Path) -> subprocess.CompletedProcess[str]:
    # lint-imports puts its working folder first on sys.path: the copy is what it analyses.
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(folder / "pyproject.toml")],
        cwd=folder,
        env={**os.environ, "COLUMNS": "400"},  # a contract's name on one line, whole
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("layers")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("receiver", "handlers"):
        shutil.copytree(ROOT / package, folder / package, ignore=ignore)
    (folder / "tests").mkdir()
    (folder / "tests" / "__init__.py").write_text("")
    shutil.copy(ROOT / "tests" / "import_contracts.py", folder / "tests")
    shutil.copy(ROOT / "pyproject.toml", folder)
    yield folder


def test_the_project_keeps_every_contract() -> None:
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "planted", "broken"),
    [
        ("receiver/store/engine.py", "import receiver.ingest.app", "Layers:"),
        ("receiver/ids.py", "import receiver.store", "The kernel"),
        ("receiver/portal/session.py", "import receiver.store", "The portal client"),
        ("receiver/worker/jobs.py", "import receiver.dispatcher", "never imports the dispatcher"),
        ("receiver/dispatcher/sender.py", "import receiver.worker.jobs", "The dispatcher imports"),
        ("handlers/duimp.py", "from receiver.worker.jobs import JobQueue", "Handlers use"),
        ("receiver/ingest/app.py", "from uvicorn.supervisors import Multiprocess", "uvicorn's"),
        ("receiver/configfile.py", "import receiver.config", "No import cycle"),
        ("receiver/worker/replay.py", "import receiver.console.inbox", "Layers:"),
        ("receiver/console/pages.py", "import receiver.runtime.serving", "Layers:"),
        ("receiver/console/pages.py", "import receiver.portal.client", "The console reads"),
        ("receiver/alerts/rules.py", "import receiver.worker.jobs", "Layers:"),
        ("receiver/alerts/sinks.py", "import receiver.runtime.alerting", "Layers:"),
        ("receiver/alert_settings.py", "import receiver.alerts", "The kernel"),
    ],
)
def test_a_planted_violation_fails(copy: Path, module: str, planted: str, broken: str) -> None:
    path = copy / module
    original = path.read_text()
    path.write_text(f"{original}\n{planted}  # planted\n")
    try:
        done = lint_imports(copy)
    finally:
        path.write_text(original)
    assert done.returncode == 1, done.stdout
    broken_lines = [line for line in done.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(broken in line for line in broken_lines), done.stdout
    assert "planted" in done.stdout or "->" in done.stdout
