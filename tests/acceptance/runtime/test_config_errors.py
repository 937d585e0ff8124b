"""Every configuration error, through the real `receiver serve` (and `worker`): one line on
stderr naming the file and the key (or the cause), no traceback, exit code 2, so that systemd's
RestartPreventExitStatus=2 stops retrying what only a person can fix. A store that cannot be
reached *now* (connection refused) is exit 3 instead: that one may pass, and is retried."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml

from tests.acceptance.conftest import ROOT, free_port
from tests.conftest import PG_SKIP_REASON, postgres_url

pytestmark = pytest.mark.acceptance

SECRET = "9f2c4e6a8b0d1f3e5a7c9e1b3d5f7a90"


@dataclass
class Case:
    """A receiver.yaml made of ``config`` (with ``prepare`` run in its folder first), what the
    one stderr line must contain, and the exit code."""

    config: dict[str, Any]
    expected: list[str]
    code: int = 2
    env: dict[str, str] = field(default_factory=dict)
    prepare: Callable[[Path], None] | None = None
    command: str = "serve"
    postgres: bool = False


def pg(database: str) -> str:
    url = postgres_url() or "postgresql://postgres@127.0.0.1:5432/x"
    return url.rsplit("/", 1)[0] + "/" + database


def pg_role(role: str) -> str:
    url = postgres_url() or "postgresql://postgres@127.0.0.1:5432/x"
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{role}@{rest.split('@', 1)[1]}"


def write(name: str, text: str) -> Callable[[Path], None]:
    def prepare(folder: Path) -> None:
        (folder / name).write_text(text)

    return prepare


def mismatched_pair(folder: Path) -> None:
    ca = trustme.CA()
    one, other = ca.issue_cert("localhost"), ca.issue_cert("localhost")
    one.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
    other.private_key_pem.write_to_path(str(folder / "key.pem"))


PUCOMEX_HEADER = {
    "pucomex": {"credentials": [{"type": "header", "name": "secret", "value": "file:chave"}]}
}

CASES = {
    "a bad CIDR in trusted_proxies": Case(
        {"trusted_proxies": ["10.0.0.0/33"]}, ["custom.yaml: trusted_proxies", "10.0.0.0/33"]
    ),
    "an unsupported database URL": Case(
        {"database_url": "mysql://x@h/db"}, ["custom.yaml: database_url", "mysql"]
    ),
    "a database URL with a bad port": Case(
        {"database_url": "postgresql://u:pw@h:notaport/db"},
        ["custom.yaml: database_url", "port"],
    ),
    "an env: secret that is not set": Case(
        {"sources": {"pucomex": {"credentials": [{"type": "bearer", "token": "env:NOT_SET"}]}}},
        ["custom.yaml: sources.pucomex.credentials.0.token", "NOT_SET is not set"],
    ),
    "an env: secret that is empty": Case(
        {"sources": {"pucomex": {"credentials": [{"type": "bearer", "token": "env:EMPTY"}]}}},
        ["custom.yaml: sources.pucomex.credentials.0.token", "EMPTY is empty"],
        env={"EMPTY": ""},
    ),
    "a file: secret that does not exist": Case(
        {"sources": PUCOMEX_HEADER},
        ["custom.yaml: sources.pucomex.credentials.0.value", "chave does not exist"],
    ),
    "a file: secret that is empty": Case(
        {"sources": PUCOMEX_HEADER},
        ["custom.yaml: sources.pucomex.credentials.0.value", "chave is empty"],
        prepare=write("chave", "\n"),
    ),
    "an unknown handler module": Case(
        {"handlers": ["no_such_module.handlers"]},
        ["custom.yaml: handlers: 'no_such_module.handlers'", "cannot import"],
    ),
    "a handler that needs portal: without it": Case(
        {"handlers": ["handlers.duimp"]}, ["custom.yaml: portal:", "handlers.duimp", "ctx.portal"]
    ),
    "the worker, a handler that needs portal: without it": Case(
        {"handlers": ["handlers.duimp"]},
        ["custom.yaml: portal:", "handlers.duimp"],
        command="worker",
    ),
    "a SQLite file in a folder that does not exist": Case(
        {"database_url": "sqlite:///no/such/folder/r.db"},
        ["custom.yaml: database_url", "folder", "does not exist"],
    ),
    "a PostgreSQL database that does not exist": Case(
        {"database_url": pg("receiver_no_such_database")},
        ["custom.yaml: database_url", "database receiver_no_such_database does not exist"],
        postgres=True,
    ),
    "a PostgreSQL role that does not exist": Case(
        {"database_url": pg_role("receiver_no_such_role")},
        ["custom.yaml: database_url", "role receiver_no_such_role does not exist"],
        postgres=True,
    ),
    "an admin_listen that is not HOST:PORT": Case(
        {"admin_listen": "9464"}, ["custom.yaml: admin_listen", "HOST:PORT"]
    ),
    "a TLS certificate without its key": Case(
        {"server": {"ssl_certfile": "cert.pem"}}, ["custom.yaml: server", "ssl_keyfile"]
    ),
    "a TLS certificate that does not exist": Case(
        {"server": {"ssl_certfile": "cert.pem", "ssl_keyfile": "key.pem"}},
        ["custom.yaml: server", "cert.pem does not exist"],
    ),
    "a TLS key that is not the certificate's": Case(
        {"server": {"ssl_certfile": "cert.pem", "ssl_keyfile": "key.pem"}},
        ["custom.yaml: server", "key.pem is not the key of"],
        prepare=mismatched_pair,
    ),
    "PostgreSQL refusing connections (may pass: exit 3, retried)": Case(
        {"database_url": f"postgresql://postgres@127.0.0.1:{free_port()}/receiver"},
        ["store unavailable", "connection refused"],
        code=3,
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
def test_a_configuration_error_is_one_line_naming_file_and_key_with_exit_2(
    tmp_path: Path, case: Case
) -> None:
    if case.postgres and postgres_url() is None:
        pytest.skip(PG_SKIP_REASON)
    (tmp_path / "allowlist.yaml").write_text("pucomex: [127.0.0.1]\n")
    config: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp_path / 'r.db'}",
        "sources": {"pucomex": {"credentials": []}},
        "admin_listen": f"127.0.0.1:{free_port()}",
        **case.config,
    }
    if case.prepare is not None:
        case.prepare(tmp_path)
    (tmp_path / "custom.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": str(ROOT), **case.env}
    env.pop("NOT_SET", None)
    args = ["--port", str(free_port())] if case.command == "serve" else []
    result = subprocess.run(
        [sys.executable, "-m", "receiver", case.command, "--config", "custom.yaml", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = result.stderr.splitlines()
    assert result.returncode == case.code, result.stderr
    assert len(lines) == 1, result.stderr
    for expected in case.expected:
        assert expected in lines[0], lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""
