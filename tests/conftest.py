"""Shared fixtures: settings, real SQLite files and the real PostgreSQL server, in-process apps."""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Table, text

from receiver.config import Settings, settings_from_mapping
from receiver.ingest.allowlist import Allowlist
from receiver.ingest.app import create_app
from receiver.runtime.admin import admin_app
from receiver.store import RECEIVER_TABLES, Store, make_engine
from receiver.store.migrate import current, head
from receiver.store.schema import RECEIVER_SCHEMA

# The project's folder, whatever depth a test module sits at.
ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"

POSTGRES_ENV = "RECEIVER_TEST_POSTGRES_URL"
PG_SKIP_REASON = (
    f"PostgreSQL tests need {POSTGRES_ENV} (e.g. postgresql://postgres@127.0.0.1:5432/test); "
    ".ci/run sets it"
)

# Realistic secrets: long enough that redaction never touches ordinary words.
PUCOMEX_TOKEN = "tok-pucomex-3f9a1c7e52d84b06"
PUCOMEX_OLD_TOKEN = "tok-pucomex-old-0b1d2e3f4a5b"
SINTEGRE_USER = "ons"
SINTEGRE_PASSWORD = "senha-sintegre-9d8c7b6a"


def postgres_url() -> str | None:
    return os.environ.get(POSTGRES_ENV) or None


def drop_tables(url: str, tables: Sequence[Table], version_table: str | None = None) -> None:
    """Empty a shared PostgreSQL database of these tables, dependants first, and of the version
    table that says where their schema stands."""
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            for table in reversed(tables):
                conn.execute(text(f"DROP TABLE IF EXISTS {table.name} CASCADE"))
            if version_table is not None:
                conn.execute(text(f"DROP TABLE IF EXISTS {version_table}"))
    finally:
        engine.dispose()


def empty_postgres(url: str) -> None:
    """No receiver table at all, as before the first ``receiver db upgrade``."""
    drop_tables(url, RECEIVER_TABLES, RECEIVER_SCHEMA.version_table)


def reset_postgres(url: str) -> None:
    """The receiver's tables at this release's revision, without a row.

    Emptied in place when they are current (TRUNCATE: about 10 ms), upgraded from nothing
    otherwise (the first test of a run, or after a migration test): alembic is run once per
    schema change, not once per test.
    """
    engine = make_engine(url)
    try:
        if current(engine, RECEIVER_SCHEMA) == head(RECEIVER_SCHEMA):
            names = ", ".join(table.name for table in RECEIVER_TABLES)
            with engine.begin() as conn:
                conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
            return
    finally:
        engine.dispose()
    empty_postgres(url)
    store = Store(url)
    try:
        store.upgrade_schema()
    finally:
        store.close()


@cache
def _template() -> Path:
    """A SQLite file upgraded once per test run, copied for each test that needs a store.

    Copying it takes about 3 ms; running the migrations takes 50 to 130 ms per database on
    this machine (create_all took about 40 ms), and many tests make one.
    """
    folder = Path(tempfile.mkdtemp(prefix="receiver-schema-"))
    atexit.register(shutil.rmtree, folder, True)
    path = folder / "template.db"
    store = Store(f"sqlite:///{path}")
    try:
        store.upgrade_schema()
    finally:
        store.close()  # the last connection checkpoints the WAL into the file and removes it
    return path


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL, None for PostgreSQL or an in-memory database."""
    if not url.startswith("sqlite:///") or url in ("sqlite:///:memory:", "sqlite:///"):
        return None
    return Path(url.removeprefix("sqlite:///"))


def upgraded_database(url: str) -> str:
    """``url`` with the receiver's tables at this release's revision, as after
    ``receiver db upgrade``: a new SQLite file is a copy of the run's template; anything else
    is upgraded in place (a no-op when it is current)."""
    path = sqlite_file(url)
    if path is not None and not path.exists():
        shutil.copyfile(_template(), path)
        return url
    store = Store(url)
    try:
        store.upgrade_schema()
    finally:
        store.close()
    return url


def migrated(store: Store) -> Store:
    """``store`` with its tables current (see ``upgraded_database``), for tests that make one."""
    path = sqlite_file(store.url)
    if path is not None and not path.exists():
        shutil.copyfile(_template(), path)
    store.upgrade_schema()  # a check of the version table when current: 1 to 8 ms
    return store


BOTH_STORES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def fresh_database(kind: str, folder: Path) -> str:
    """A real SQLite file in ``folder``, or the real PostgreSQL server, with the receiver's
    tables current and empty (as after ``receiver db upgrade``)."""
    if kind == "sqlite":
        return upgraded_database(f"sqlite:///{folder / 'receiver.db'}")
    url = postgres_url()
    if url is None:
        pytest.skip(PG_SKIP_REASON)
    reset_postgres(url)
    return url


def empty_database(kind: str, folder: Path) -> str:
    """A real SQLite file in ``folder`` (not made yet), or the real PostgreSQL server without
    any receiver table: what ``receiver db upgrade`` starts from."""
    if kind == "sqlite":
        return f"sqlite:///{folder / 'receiver.db'}"
    url = postgres_url()
    if url is None:
        pytest.skip(PG_SKIP_REASON)
    empty_postgres(url)
    return url


@pytest.fixture(params=BOTH_STORES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using it runs on a real SQLite file and on the real PostgreSQL server."""
    return fresh_database(request.param, tmp_path)


def base_config(database_url: str, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "database_url": database_url,
        "trusted_proxies": ["10.0.0.0/8"],
        "max_body_bytes": 4096,
        "ack_timeout_seconds": 2.0,
        "sources": {
            "pucomex": {
                "credentials": [
                    {"type": "bearer", "token": PUCOMEX_TOKEN},
                    {"type": "bearer", "token": PUCOMEX_OLD_TOKEN},
                ]
            },
            "sintegre": {
                "credentials": [
                    {"type": "basic", "username": SINTEGRE_USER, "password": SINTEGRE_PASSWORD}
                ]
            },
            "invoicy": {"credentials": []},
        },
        "retry": {"max_attempts": 3, "backoff_seconds": 0.01, "jitter": 0},
        "worker": {"poll_interval_seconds": 0.02, "handler_timeout_seconds": 5},
    }
    config.update(overrides)
    return config


ALLOWLIST = {
    "pucomex": ["203.0.113.0/24", "2001:db8:1::/48"],
    "sintegre": ["198.51.100.10"],
    "invoicy": ["192.0.2.0/24"],
}


@pytest.fixture
def make_settings(database_url: str) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        return settings_from_mapping(base_config(database_url, **overrides), origin="test")

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    store = migrated(Store(settings.database_url))
    yield store
    store.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    """A store on a real SQLite file, ``tmp_path / "receiver.db"``, for what reads the file."""
    store = migrated(Store(f"sqlite:///{tmp_path / 'receiver.db'}"))
    try:
        yield store
    finally:
        store.close()


class AppClient:
    """An in-process ingest app with its store running, and a way to speak from any address;
    ``admin`` speaks to the admin listener's app (/healthz, /readyz, /metrics) of the same
    process."""

    def __init__(self, app: Any, store: Store, settings: Settings | None = None) -> None:
        self.app = app
        self.store = store
        retry_after = settings.retry_after_seconds if settings is not None else 5

        async def ready() -> bool:
            return await asyncio.to_thread(store.ready, retry_after)

        self.admin_app = admin_app(ready, retry_after_seconds=retry_after)

    def client(self, ip: str = "203.0.113.7", port: int = 40000) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=(ip, port))
        return httpx.AsyncClient(transport=transport, base_url="http://receiver.test")

    def admin(self) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.admin_app, client=("127.0.0.1", 50000))
        return httpx.AsyncClient(transport=transport, base_url="http://admin.test")


@pytest.fixture
async def ingest(settings: Settings, store: Store) -> AsyncIterator[AppClient]:
    app = create_app(settings, store=store, allowlist=Allowlist.from_mapping(ALLOWLIST))
    store.start()
    yield AppClient(app, store, settings)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def bearer(token: str = PUCOMEX_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
