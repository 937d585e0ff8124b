"""``receiver dispatcher``: emit, resend-pending and send-latest from the command line against a
real SQLite file and a real HTTPS endpoint, and the bare group serving the API."""

from __future__ import annotations

import json
import os
import signal
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
from click.testing import CliRunner

from receiver.dispatcher import DispatchStore
from receiver.dispatcher.validation import SubscriptionInput
from receiver.runtime.cli import main
from receiver.store.tables import utcnow
from tests.conftest import ROOT
from tests.dispatcher_support import LOOPBACK, TLS, TOKEN_A, InThread, Recorder, https_endpoint


class EndpointThread:
    """A recording HTTPS endpoint served from another thread while a CLI command blocks this one."""

    def __init__(self, tls: TLS) -> None:
        self.recorder = Recorder()
        self._server = InThread(lambda: https_endpoint(tls, self.recorder))
        self.url = ""

    def __enter__(self) -> EndpointThread:
        self.url = self._server.__enter__().url
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.__exit__(*exc)


@pytest.fixture
def tls() -> TLS:
    return TLS()


@pytest.fixture
def config(tmp_path: Path, tls: TLS) -> Path:
    tls.ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    values: dict[str, Any] = {
        "dispatcher": {
            "database_url": "sqlite:///dispatcher.db",  # relative: next to the config file
            "attempts": 2,
            "interval_seconds": 0.01,
            "poll_seconds": 0.05,
            "allowed_networks": LOOPBACK,
            "outbound_ca_file": "ca.pem",
            "clients": {TOKEN_A: "client-a"},
        }
    }
    path = tmp_path / "receiver.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.fixture
def store(config: Path) -> Iterator[DispatchStore]:
    store = DispatchStore(f"sqlite:///{config.parent / 'dispatcher.db'}")
    store.upgrade_schema()
    yield store
    store.close()


def subscribe(store: DispatchStore, endpoint: str, evento: str = "duimp.registro") -> int:
    return store.add_subscription(
        "client-a", SubscriptionInput(evento, endpoint, None), utcnow()
    ).id


def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def data_file(tmp_path: Path, value: Any) -> str:
    path = tmp_path / "dados.json"
    path.write_text(json.dumps(value))
    return str(path)


def test_the_group_lists_its_commands() -> None:
    result = run("dispatcher", "--help")
    assert result.exit_code == 0
    for command in ("emit", "resend-pending", "send-latest"):
        assert command in result.output


def test_emit_sends_and_waits_for_the_receipt(
    tmp_path: Path, config: Path, store: DispatchStore, tls: TLS
) -> None:
    with EndpointThread(tls) as endpoint:
        subscribe(store, endpoint.url + "/hook")
        dados = data_file(tmp_path, {"numero": "24BR0000000009", "versao": 1})
        result = run(
            "dispatcher", "--config", str(config), "emit", "duimp.registro", "--json", dados
        )
    assert result.exit_code == 0, result.output
    assert "delivered after 1 attempt(s)" in result.output
    (received,) = endpoint.recorder.requests
    body = json.loads(received.body)
    assert (body["evento"], body["dados"]) == (
        "duimp.registro",
        {"numero": "24BR0000000009", "versao": 1},
    )


def test_emit_exits_1_when_a_delivery_fails(
    tmp_path: Path, config: Path, store: DispatchStore
) -> None:
    subscribe(store, "https://127.0.0.1:1/hook")  # nothing listens on port 1
    result = run(
        "dispatcher",
        "emit",
        "duimp.registro",
        "--json",
        data_file(tmp_path, {}),
        "--config",
        str(config),
    )
    assert result.exit_code == 1
    assert "failed after 2 attempt(s)" in result.output


def test_no_wait_only_stores_and_the_operator_actions(
    tmp_path: Path, config: Path, store: DispatchStore, tls: TLS
) -> None:
    sid = subscribe(store, "https://127.0.0.1:1/hook")
    dados = data_file(tmp_path, {"n": 1})
    stored = run(
        "dispatcher",
        "--config",
        str(config),
        "emit",
        "duimp.registro",
        "--json",
        dados,
        "--no-wait",
    )
    assert stored.exit_code == 0, stored.output
    assert "stored 1 deliveries" in stored.output
    assert [s.status for s in store.deliveries(subscription_id=sid)] == ["pending"]

    with EndpointThread(tls) as endpoint:
        # The operator fixes the endpoint, then resends what is pending and sends the latest again.
        store.update_subscription(
            sid, None, SubscriptionInput("duimp.registro", endpoint.url + "/fixed", None), utcnow()
        )
        resent = run("dispatcher", "--config", str(config), "resend-pending", str(sid))
        assert resent.exit_code == 0, resent.output
        latest = run("dispatcher", "--config", str(config), "send-latest", str(sid))
        assert latest.exit_code == 0, latest.output
    assert [request.path for request in endpoint.recorder.requests] == ["/fixed", "/fixed"]
    assert {s.status for s in store.deliveries(subscription_id=sid)} == {"delivered"}


def test_unknown_subscription_and_bad_input(
    tmp_path: Path, config: Path, store: DispatchStore
) -> None:
    unknown = run("dispatcher", "--config", str(config), "resend-pending", "999")
    assert unknown.exit_code == 1
    assert "no subscription with id 999" in unknown.output
    not_object = run(
        "dispatcher", "--config", str(config), "emit", "x", "--json", data_file(tmp_path, [1])
    )
    assert not_object.exit_code == 2
    bad_event = run(
        "dispatcher",
        "--config",
        str(config),
        "emit",
        "no spaces",
        "--json",
        data_file(tmp_path, {}),
    )
    assert bad_event.exit_code == 1
    assert "evento" in bad_event.output


def test_a_configuration_error_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "receiver.yaml"
    path.write_text(yaml.safe_dump({"dispatcher": {"attempts": 0}}))
    result = run("dispatcher", "--config", str(path), "send-latest", "1")
    assert result.exit_code == 2
    assert "dispatcher.attempts" in result.output
    assert "Traceback" not in result.output


def test_bare_dispatcher_serves_the_api(config: Path, store: DispatchStore) -> None:
    # ``store`` upgraded the dispatcher's schema, as `receiver dispatcher db upgrade` does.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = ["dispatcher", "--config", str(config), "--port", str(port)]
    process = subprocess.Popen(
        [sys.executable, "-c", "from receiver.runtime.cli import main; main()", *command],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while True:
            try:
                if httpx.get(url + "/healthz", trust_env=False).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "receiver dispatcher did not start"
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            time.sleep(0.1)
        headers = {"Authorization": f"Bearer {TOKEN_A}"}
        subscription = {"evento": "duimp.registro", "endpoint": "https://sefaz.example/hook"}
        created = httpx.post(
            url + "/portal/api/ext/webhook", json=subscription, headers=headers, trust_env=False
        )
        assert created.status_code == 200
        assert httpx.get(
            url + "/portal/api/ext/webhook", headers=headers, trust_env=False
        ).json() == [created.json()]
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=10)
    assert (config.parent / "dispatcher.db").exists()
