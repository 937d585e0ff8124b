"""The deployment kit checked by real tools where this machine has them: `systemd-analyze verify`
and `security` on the units, the image's health check command run against a real listener, the
package built from exactly what the Dockerfile copies, and the example receiver.yaml read by the
real `receiver` command. (nginx runs in tests/acceptance/deploy/test_nginx.py.)"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.deploy.test_kit import (
    CONFIG,
    DOCKERFILE,
    SYSTEMD,
    UNITS,
    dockerfile,
    stages,
)

ROOT = Path(__file__).parents[3]
RECEIVER = Path(sys.executable).with_name("receiver")  # this virtualenv's console script
SHIPPED_BINARY = "/opt/receiver/bin/receiver"


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip("systemd-analyze is not installed here (Debian: package systemd)")
    return found


@pytest.fixture
def units(tmp_path: Path) -> list[Path]:
    """The units as shipped, with ExecStart on this virtualenv's `receiver` (verify checks that
    each command exists and is executable)."""
    assert RECEIVER.is_file(), RECEIVER
    copies = []
    for unit in UNITS:
        text = (SYSTEMD / unit).read_text()
        assert SHIPPED_BINARY in text, unit
        copy = tmp_path / unit
        copy.write_text(text.replace(SHIPPED_BINARY, str(RECEIVER)))
        copies.append(copy)
    return copies


def test_systemd_analyze_verify_accepts_the_units(units: list[Path]) -> None:
    analyze = systemd_analyze()
    result = subprocess.run(
        [analyze, "verify", *map(str, units)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=units[0].parent,
    )
    # An unknown or misspelt directive is only a warning (exit 0): any line about our units fails.
    ours = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if "receiver-" in line or "receiver." in line
    ]
    assert result.returncode == 0 and ours == [], result.stdout + result.stderr


def test_systemd_analyze_verify_would_catch_a_typo(tmp_path: Path, units: list[Path]) -> None:
    """The check above can fail: a misspelt hardening directive is reported."""
    analyze = systemd_analyze()
    typo = units[0].read_text().replace("NoNewPrivileges=yes", "NoNewPrivilege=yes")
    units[0].write_text(typo)
    result = subprocess.run(
        [analyze, "verify", *map(str, units)], capture_output=True, text=True, timeout=60
    )
    assert "Unknown key 'NoNewPrivilege'" in result.stdout + result.stderr


def test_systemd_rates_every_unit_ok_or_better(units: list[Path]) -> None:
    analyze = systemd_analyze()
    for unit in units:
        result = subprocess.run(
            [analyze, "security", "--offline=true", "--no-pager", str(unit)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=unit.parent,
        )
        if result.returncode != 0 and "offline" in result.stderr:
            pytest.skip(f"this systemd-analyze cannot rate a unit file offline: {result.stderr}")
        found = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", result.stdout)
        assert found, result.stdout + result.stderr
        # systemd's scale: 0 to 10, where "OK" ends at 3.9 and an unhardened service is 9.6.
        assert float(found[1]) <= 2.0, f"{unit.name}: {found[0]}"


# --- the image's health check ------------------------------------------------------------------


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def admin_listener() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def healthcheck(port: int) -> int:
    """Run the Dockerfile's HEALTHCHECK command as Docker would, on ``port`` instead of 9464."""
    (check,) = [i for i in dockerfile(DOCKERFILE.read_text()) if i.keyword == "HEALTHCHECK"]
    argv = json.loads(check.arguments.partition("CMD ")[2])
    assert argv[0] == "python" and "9464" in argv[2]
    code = argv[2].replace("9464", str(port))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30).returncode


def test_the_healthcheck_passes_on_200_and_fails_otherwise(
    admin_listener: http.server.HTTPServer,
) -> None:
    port = admin_listener.server_address[1]
    assert isinstance(port, int)
    assert healthcheck(port) == 0
    _Health.status = 503
    try:
        assert healthcheck(port) == 1
    finally:
        _Health.status = 200


def test_the_healthcheck_fails_when_nothing_listens() -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    port = server.server_address[1]
    server.server_close()
    assert isinstance(port, int)
    assert healthcheck(port) != 0


# --- the package, from what the image copies ---------------------------------------------------


def test_the_files_the_image_copies_build_the_whole_package(tmp_path: Path) -> None:
    """The build stage's COPY lines, applied to a clean folder, then `pip wheel` there (the
    Dockerfile's `pip install .` without the dependencies): every module of the project is in the
    wheel, `receiver` is its console script, and it runs from the wheel alone, migrations too."""
    source = tmp_path / "src"
    source.mkdir()
    build = stages(dockerfile(DOCKERFILE.read_text()))[1]
    for instruction in build:
        if instruction.keyword != "COPY":
            continue
        *paths, _ = instruction.arguments.split()
        for path in paths:
            origin = ROOT / path
            if origin.is_dir():
                shutil.copytree(origin, source / path, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(origin, source / path)
    wheels = tmp_path / "wheels"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), "."],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (entry_points,) = [name for name in names if name.endswith("entry_points.txt")]
        scripts = archive.read(entry_points).decode()
        archive.extractall(tmp_path / "installed")
    modules = {
        str(path.relative_to(ROOT))
        for package in ("receiver", "handlers")
        for path in (ROOT / package).rglob("*.py")
    }
    assert modules and modules <= names, sorted(modules - names)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for script, target in pyproject["project"]["scripts"].items():
        assert f"{script} = {target}" in scripts
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "installed"))
    run_it = (
        "import runpy, sys, receiver; print(receiver.__file__, flush=True); "
        "sys.argv = ['receiver', '--version']; runpy.run_module('receiver', run_name='__main__')"
    )
    ran = subprocess.run(
        [sys.executable, "-c", run_it],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith(str(tmp_path / "installed")), ran.stdout + ran.stderr
    # The migrations are in the wheel, and alembic finds them there without an alembic.ini.
    (tmp_path / "receiver.yaml").write_text(f"database_url: sqlite:///{tmp_path / 'r.db'}\n")
    upgrade = (
        "import runpy, sys; sys.argv = ['receiver', 'db', 'upgrade', '--config', "
        f"{str(tmp_path / 'receiver.yaml')!r}]; runpy.run_module('receiver', run_name='__main__')"
    )
    upgraded = subprocess.run(
        [sys.executable, "-c", upgrade],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert upgraded.returncode == 0, upgraded.stderr
    assert "upgraded <empty> -> r" in upgraded.stdout


# --- the example configuration -----------------------------------------------------------------


def test_the_example_configuration_is_read_by_the_receiver(tmp_path: Path) -> None:
    env = dict(
        os.environ,
        RECEIVER_DATABASE_URL=f"sqlite:///{tmp_path / 'receiver.db'}",
        RECEIVER_TRUSTED_PROXY="127.0.0.1",
        PUCOMEX_CHAVE_SECRETA="0484a6e22cf66a2d3da8953789f8c6b3",
    )
    read = subprocess.run(
        [str(RECEIVER), "events", "--config", str(CONFIG), "--source", "pucomex"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert read.returncode == 0, read.stderr
    assert "dimp-situacao-import" in read.stdout
    del env["PUCOMEX_CHAVE_SECRETA"]
    missing = subprocess.run(
        [str(RECEIVER), "events", "--config", str(CONFIG)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2
    assert "PUCOMEX_CHAVE_SECRETA is not set" in missing.stderr
