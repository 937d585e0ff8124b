"""``receiver db upgrade|current|history`` and ``receiver dispatcher db ...`` as real commands,
and the serving commands refusing a schema that is missing, behind or ahead: one line naming the
command to run, exit 2."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sqlalchemy import text

from receiver.store import make_engine
from receiver.store.migrate import head
from receiver.store.schema import RECEIVER_SCHEMA
from tests.acceptance.conftest import Deployment, free_port, wait_ready
from tests.conftest import BOTH_STORES, empty_database
from tests.fixtures.previous_release import make_previous_release

pytestmark = pytest.mark.acceptance
HEAD = head(RECEIVER_SCHEMA)


@pytest.fixture(params=BOTH_STORES)
def bare(request: pytest.FixtureRequest, tmp_path: Path) -> Deployment:
    """A deployment whose database has no receiver table yet."""
    return Deployment(tmp_path, empty_database(request.param, tmp_path), upgrade=False)


LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [A-Z]+ ")


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line of the error (log records before it, a start-up warning, are not it)."""
    assert "Traceback" not in result.stderr
    lines = [
        line for line in result.stderr.splitlines() if line.strip() and not LOG_RECORD.match(line)
    ]
    assert len(lines) == 1, result.stderr
    return lines[0]


def refused(deployment: Deployment, *command: str) -> str:
    result = deployment.cli(*command)
    assert result.returncode == 2, result.stderr
    return one_line(result)


SERVING = [("serve", "--port", "0"), ("worker",), ("inbox", "list")]


def test_a_fresh_database_is_refused_then_upgraded_then_served(bare: Deployment) -> None:
    for command in SERVING:
        line = refused(bare, *command)
        assert line.startswith("receiver: the receiver store at ")
        assert line.endswith("has no receiver tables: run `receiver db upgrade`")

    current = bare.cli("db", "current")
    assert current.returncode == 1, current.stderr  # not current: a script can test it
    assert current.stdout.startswith("<none>: ")

    upgraded = bare.cli("db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.strip().endswith(f"upgraded <empty> -> {HEAD}")
    assert upgraded.stderr == ""  # one line, not alembic's chatter
    assert "password" not in upgraded.stdout
    again = bare.cli("db", "upgrade")
    assert again.stdout.strip().endswith(f"already at {HEAD} (head)")
    at_head = bare.cli("db", "current")
    assert (at_head.returncode, at_head.stdout.strip()) == (0, f"{HEAD} (head)")

    port = free_port()
    bare.serve(port)  # ready: /readyz answered 200
    bare.stop_all()


def test_a_schema_ahead_of_this_release_is_refused_by_every_command(tmp_path: Path) -> None:
    # SQLite only: each command costs a process start (2 to 3 s on a busy machine), and reading
    # the version on PostgreSQL is covered by tests/integration/store/test_migrations.py.
    bare = Deployment(tmp_path, empty_database("sqlite", tmp_path), upgrade=False)
    assert bare.cli("db", "upgrade").returncode == 0
    engine = make_engine(yaml.safe_load(bare.config.read_text())["database_url"])
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'r9999'"))
    engine.dispose()
    for command in [*SERVING, ("db", "upgrade")]:
        line = refused(bare, *command)
        assert "is at revision r9999, which this release does not know" in line
    ahead = bare.cli("db", "current")
    assert ahead.returncode == 1
    assert "r9999" in ahead.stdout


def test_a_previous_release_database_is_refused_until_upgraded_which_adopts_it(
    bare: Deployment,
) -> None:
    engine = make_engine(yaml.safe_load(bare.config.read_text())["database_url"])
    make_previous_release(engine)
    engine.dispose()
    line = refused(bare, "worker")
    assert line.endswith("was made by the release before migrations: run `receiver db upgrade`")
    upgraded = bare.cli("db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert "adopted the tables of the release before migrations at r0001" in upgraded.stdout


def test_db_history_lists_the_revisions_oldest_first(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "receiver", "db", "history"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("<base> -> r0001")
    assert "baseline: the tables of release 0.1.0" in lines[0]
    assert lines[-1].split(":")[0].endswith(f"{HEAD} (head)")


def test_serve_migrate_upgrades_the_embedded_default_before_serving(tmp_path: Path) -> None:
    deployment = Deployment(tmp_path, f"sqlite:///{tmp_path / 'receiver.db'}", upgrade=False)
    port = free_port()
    process = deployment.start("serve", "--port", str(port), "--migrate")
    try:
        wait_ready(deployment.admin, process)
    finally:
        deployment.stop_all()
    assert (
        f"receiver store at sqlite:///{tmp_path / 'receiver.db'}: upgraded <empty> -> {HEAD}"
        in (deployment.output())
    )


def test_the_dispatcher_commands_refuse_until_its_own_schema_is_upgraded(tmp_path: Path) -> None:
    config = tmp_path / "receiver.yaml"
    config.write_text(yaml.safe_dump({"dispatcher": {"database_url": "sqlite:///dispatcher.db"}}))

    def dispatcher(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "receiver", "dispatcher", *args, "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )

    (tmp_path / "dados.json").write_text("{}")
    result = dispatcher("emit", "duimp.registro", "--json", str(tmp_path / "dados.json"))
    assert result.returncode == 2, result.stderr
    assert one_line(result).endswith(
        "has no dispatcher tables: run `receiver dispatcher db upgrade`"
    )
    upgraded = dispatcher("db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert "dispatcher store at " in upgraded.stdout and "-> d0001" in upgraded.stdout
    assert dispatcher("db", "current").stdout.strip() == "d0001 (head)"
    emitted = dispatcher("emit", "duimp.registro", "--json", str(tmp_path / "dados.json"))
    assert emitted.returncode == 0, emitted.stderr
    # The receiver's history is another: its tables were not made in the dispatcher's store.
    assert "r0001" not in dispatcher("db", "history").stdout
