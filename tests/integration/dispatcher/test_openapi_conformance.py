"""The served OpenAPI document matches what the app does: schemathesis, every check, against the
dispatcher on a real socket. Its sender has a mock transport, so the random endpoints schemathesis
subscribes are never resolved or called. A short run with a fixed seed; raise the examples with
DISPATCHER_SCHEMATHESIS_EXAMPLES for a deeper one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from receiver.dispatcher import run_dispatcher
from tests.dispatcher_support import TOKEN_A, InThread, dispatcher_settings, sqlite_url


def test_schemathesis_finds_no_mismatch(tmp_path: Path) -> None:
    settings = dispatcher_settings(sqlite_url(tmp_path), attempts=1)
    answer_200 = httpx.MockTransport(lambda request: httpx.Response(200))
    with InThread(lambda: run_dispatcher(settings, transport=answer_200)) as running:
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "schemathesis.cli",
                "run",
                f"{running.url}/portal/api/ext/openapi.json",
                "-H",
                f"Authorization: Bearer {TOKEN_A}",
                "--checks",
                "all",
                "--max-examples",
                os.environ.get("DISPATCHER_SCHEMATHESIS_EXAMPLES", "15"),
                "--seed",
                "1",
                # One worker: hypothesis parses lambdas with ast, which is not thread-safe on 3.11.
                "--workers",
                "1",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    assert run.returncode == 0, run.stdout[-4000:]
    assert "No issues found" in run.stdout
