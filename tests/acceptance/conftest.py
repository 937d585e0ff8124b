"""Real `receiver` processes on real sockets: start, wait until ready, kill, run CLI commands."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import BOTH_STORES, fresh_database, upgraded_database

ROOT = Path(__file__).parents[2]
TOKEN = "tok-acceptance-5c1e0f9b7a"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Deployment:
    """A receiver.yaml in a folder, and the processes started from it. ``admin`` is serve's
    admin listener (/healthz, /readyz, /metrics), on a free port; workers get one each from the
    system (port 0). Its database is upgraded first, as an operator runs ``receiver db upgrade``
    before ``serve`` (``upgrade=False``: a test of what happens without)."""

    def __init__(
        self, folder: Path, database_url: str, *, upgrade: bool = True, **config: Any
    ) -> None:
        if upgrade:
            upgraded_database(database_url)
        self.folder = folder
        self.admin_port = free_port()
        self.admin = f"http://127.0.0.1:{self.admin_port}"
        self.log = folder / "handlers.log"
        self.config = folder / "receiver.yaml"
        (folder / "allowlist.yaml").write_text(
            yaml.safe_dump({s: ["127.0.0.1", "::1"] for s in ("pucomex", "sintegre", "invoicy")})
        )
        settings: dict[str, Any] = {
            "database_url": database_url,
            "allowlist": "allowlist.yaml",
            "sources": {
                "pucomex": {"credentials": [{"type": "bearer", "token": "env:ACCEPT_TOKEN"}]},
                "sintegre": {"credentials": []},
                "invoicy": {"credentials": []},
            },
            "handlers": ["tests.fixtures.acceptance_handlers"],
            "retry": {"max_attempts": 3, "backoff_seconds": 0.05, "jitter": 0},
            "worker": {
                "poll_interval_seconds": 0.05,
                "lease_seconds": 2,
                "admin_listen": "127.0.0.1:0",
            },
            "log_level": "INFO",
            "admin_listen": f"127.0.0.1:{self.admin_port}",
        }
        settings.update(config)
        # Several workers, and other tests' serve, on one machine: the system picks each port.
        settings["worker"] = {"admin_listen": "127.0.0.1:0", **settings["worker"]}
        self.config.write_text(yaml.safe_dump(settings))
        self.processes: list[subprocess.Popen[bytes]] = []

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(PYTHONPATH=str(ROOT), ACCEPT_TOKEN=TOKEN, ACCEPT_LOG=str(self.log), **extra)
        return env

    def start(self, *args: str, **env: str) -> subprocess.Popen[bytes]:
        output = open(self.folder / f"process-{len(self.processes)}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            [sys.executable, "-m", "receiver", *args, "--config", str(self.config)],
            cwd=self.folder,
            env=self.env(**env),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        output.close()
        self.processes.append(process)
        return process

    def serve(self, port: int, *args: str, **env: str) -> subprocess.Popen[bytes]:
        process = self.start("serve", "--port", str(port), *args, **env)
        wait_ready(self.admin, process)
        return process

    def metrics(self) -> str:
        """What serve's admin listener shows at /metrics."""
        return httpx.get(f"{self.admin}/metrics", timeout=10).text

    def cli(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "receiver", *args, "--config", str(self.config)],
            cwd=self.folder,
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=120,
        )

    def inbox(self, *args: str) -> list[dict[str, Any]]:
        result = self.cli("inbox", "list", "--json", *args)
        assert result.returncode == 0, result.stderr
        return [json.loads(line) for line in result.stdout.splitlines()]

    def stop_all(self, graceful: bool = False) -> None:
        """Kill every process started here; ``graceful``: ask them to stop (SIGTERM) first.

        A serving process that stops cleanly has also waited for its writer process, which is
        not our child: killed, it leaves the writer to notice alone, and the writer may still be
        closing the store (and removing SQLite's -wal and -shm files) when this returns.
        """
        for process in self.processes:
            if process.poll() is None and graceful:
                process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=30)
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)

    def output(self) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.folder.glob("process-*.log"))
        )


def wait_ready(base: str, process: subprocess.Popen[bytes], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"receiver exited with {process.returncode} while starting")
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError("receiver did not become ready")


@pytest.fixture(params=BOTH_STORES)
def deployment_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return fresh_database(request.param, tmp_path)


@pytest.fixture
def deployment(tmp_path: Path, deployment_url: str) -> Iterator[Deployment]:
    deployment = Deployment(tmp_path, deployment_url)
    yield deployment
    deployment.stop_all()


def duimp_body(n: int, event: str = "duimp.registro") -> bytes:
    """A ~1 KiB PUCOMEX notification, unique per ``n``."""
    payload = {
        "evento": event,
        "dataHora": "2026-11-22T10:00:00-03:00",
        "dados": {"numero": f"26BR{n:010d}", "versao": "1", "observacao": "x" * 700},
    }
    return json.dumps(payload).encode()
