"""A serving process of plain ``receiver serve`` imports no optional feature it was not given.

Every serving process pays for what it imports (resident, for its life): measured after start-up
on SQLite with its worker, 98 -> 89 MiB once cryptography (TLS only), httpx with its CLI's rich
and pygments, standardwebhooks (the alerts' webhook sink) and the Portal watch were imported
only when configured. The console (jinja2, argon2, itsdangerous) never was: keep it so.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# Imported only when receiver.yaml asks for them.
OPTIONAL = [
    "cryptography",  # server: ssl_certfile (receiver.ingest.tls checks the pair)
    "standardwebhooks",  # alerts: a webhook sink
    "receiver.outbound",  # the alerts' webhook sink, ctx.http
    "receiver.portal",  # portal:
    "receiver.runtime.watch",  # portal: (the watch)
    "receiver.console",  # console:
    "jinja2",
    "argon2",
    "itsdangerous",
    "receiver.dispatcher",
    "receiver.simulator",
    # The schema check reads the version table itself; alembic (and mako, pygments) is for the
    # commands that upgrade or list revisions: 11.5 MiB.
    "alembic",
    "mako",
    "pygments",
]
# ctx.http is the worker's: a serving process without one never needs httpx.
# (rich came with httpx's command line.)
WITHOUT_A_WORKER = ["httpx", "httpcore", "rich"]

SERVING_PROCESS = """
import json, sys
from pathlib import Path
from receiver.runtime.cli.serve import _ingest_app
from receiver.runtime.cliutil import settings_for
from receiver.store import Store

settings = settings_for(Path(sys.argv[1]))
store = Store.from_settings(settings)
store.check_schema()  # as serve does at start
store.close()
_ingest_app(settings, None, no_worker=sys.argv[2] == "no-worker")
print(json.dumps(sorted(sys.modules)))
"""


def serving_modules(tmp_path: Path, worker: str) -> set[str]:
    (tmp_path / "allowlist.yaml").write_text("pucomex: [127.0.0.1]\n")
    config = tmp_path / "receiver.yaml"
    config.write_text(
        f"database_url: sqlite:///{tmp_path / 'receiver.db'}\n"
        f"allowlist: {tmp_path / 'allowlist.yaml'}\n"
        "sources:\n"
        "  pucomex:\n"
        "    credentials:\n"
        "      - {type: bearer, token: a-token}\n"
        "handlers: []\n"
    )
    subprocess.run(  # the operator's step, in a process of its own
        [sys.executable, "-m", "receiver", "db", "upgrade", "--config", str(config)],
        capture_output=True,
        check=True,
        cwd=tmp_path,
    )
    found = subprocess.run(
        [sys.executable, "-c", SERVING_PROCESS, str(config), worker],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    return set(json.loads(found.splitlines()[-1]))


@pytest.mark.parametrize("worker", ["worker", "no-worker"])
def test_a_plain_serving_process_imports_no_optional_feature(tmp_path: Path, worker: str) -> None:
    modules = serving_modules(tmp_path, worker)
    assert "receiver.ingest.app" in modules
    assert "receiver.runtime.alerting" in modules  # the alerts run in serve by default
    unwanted = OPTIONAL + (WITHOUT_A_WORKER if worker == "no-worker" else [])
    imported = {
        name for name in modules for top in unwanted if name == top or name.startswith(top + ".")
    }
    assert sorted(imported) == []
