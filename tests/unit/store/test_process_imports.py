"""The writer process imports what it commits with, not the rest of the receiver.

``python -m receiver.store.process`` runs beside every serving process: each module it imports
for nothing is resident twice per serving process. Measured after its imports: 72 MiB when it
imported the store's facade (settings, alembic), SQLModel and prometheus_client; 40 MiB without.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Each was in the writer process before, for nothing it does.
NOT_IN_THE_WRITER = [
    "alembic",  # receiver.store.migrate, through receiver.store's facade
    "pydantic",  # the settings (receiver.config), and SQLModel's models
    "sqlmodel",  # receiver.store.tables: the writer inserts through rows.NOTE_ROW
    "sqlalchemy.orm",  # SQLModel's
    "prometheus_client",  # receiver.metrics: the serving process counts the commits
    "receiver.config",
    "receiver.store.facade",
    "receiver.store.tables",
    "receiver.store.process.client",
    "receiver.metrics",
    "httpx",
    "starlette",
    "uvicorn",
    "click",
]


def modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    found = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(json.loads(found.splitlines()[-1]))


@pytest.fixture(scope="module")
def writer_modules() -> set[str]:
    # What ``python -m receiver.store.process FD`` imports before it reads its socket: the
    # packages on the way, and child (``__main__`` imports nothing else).
    return modules_after("import receiver.store.process.child")


def test_the_writer_process_imports_only_what_it_commits_with(writer_modules: set[str]) -> None:
    assert "receiver.store.process.child" in writer_modules
    assert "sqlalchemy" in writer_modules
    assert sorted(set(NOT_IN_THE_WRITER) & writer_modules) == []
