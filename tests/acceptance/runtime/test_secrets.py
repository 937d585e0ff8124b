"""Canary secrets go through a real receiver; none may appear in its logs or its store."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import pytest

from tests.acceptance.conftest import TOKEN, Deployment, free_port

pytestmark = pytest.mark.acceptance

WRONG_TOKEN = "canary-wrong-token-7d1f3a"
BASIC_PASSWORD = "canary-basic-password-51bd"
CHAVE = "canary-chave-secreta-9e04c2"
WRONG_CHAVE = "canary-wrong-chave-3b7a1d"


def test_no_secret_reaches_logs_or_store(tmp_path: Path) -> None:
    database = tmp_path / "receiver.db"
    deployment = Deployment(
        tmp_path,
        f"sqlite:///{database}",
        sources={
            "pucomex": {
                "credentials": [
                    {"type": "bearer", "token": "env:ACCEPT_TOKEN"},
                    {"type": "header", "name": "secret", "value": CHAVE},
                ]
            },
            "sintegre": {
                "credentials": [{"type": "basic", "username": "ons", "password": BASIC_PASSWORD}]
            },
            "invoicy": {"credentials": []},
        },
        log_level="DEBUG",
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}/webhooks"
    try:
        deployment.serve(port)
        basic = base64.b64encode(f"ons:{BASIC_PASSWORD}".encode()).decode()
        answers = [
            httpx.post(
                f"{base}/pucomex",
                content=b'{"evento":"duimp.registro","dados":{}}',
                headers={"Authorization": f"Bearer {TOKEN}", "Cookie": f"s={TOKEN}"},
            ),
            httpx.post(
                f"{base}/pucomex", content=b"{}", headers={"Authorization": f"Bearer {WRONG_TOKEN}"}
            ),
            httpx.post(
                f"{base}/sintegre",
                content=b'{"Nome":"x","Uri":"https://x"}',
                headers={"Authorization": f"Basic {basic}"},
            ),
            httpx.post(
                f"{base}/sintegre",
                content=b"{}",
                headers={"Proxy-Authorization": f"Basic {basic}", "Authorization": "Basic bad"},
            ),
            httpx.post(
                f"{base}/pucomex",
                content=b'{"n": 1}',
                headers={"secret": CHAVE, "event-type": "dimp-registro-import"},
            ),
            httpx.post(f"{base}/pucomex", content=b'{"n": 2}', headers={"secret": WRONG_CHAVE}),
            httpx.post(
                f"{base}/sintegre",
                content=b'{"Nome":"y","Url":"https://y"}',
                headers={"Authorization": f"Basic {basic}", "secret": CHAVE},
            ),
        ]
        assert [a.status_code for a in answers] == [200, 401, 200, 401, 200, 401, 200]
        for answer in answers:
            assert TOKEN not in answer.text and BASIC_PASSWORD not in answer.text
            assert CHAVE not in answer.text and CHAVE not in str(answer.headers)
        listing = deployment.cli("inbox", "list", "--json")
        assert listing.returncode == 0
    finally:
        deployment.stop_all(graceful=True)  # the store's files are read next: all closed first
    # Every connection closed cleanly, the writer process's too: SQLite removed its WAL files.
    assert sorted(p.name for p in tmp_path.glob("receiver.db*")) == ["receiver.db"]
    logs = deployment.output()
    assert "refused pucomex" in logs  # the audit line is there, without the secret
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("receiver.db*"))
    for secret in (TOKEN, WRONG_TOKEN, BASIC_PASSWORD, basic, CHAVE, WRONG_CHAVE):
        assert secret not in logs
        assert secret.encode() not in stored
        assert secret not in listing.stdout
