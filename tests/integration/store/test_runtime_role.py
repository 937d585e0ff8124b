"""The two PostgreSQL roles of the README: an owner that runs ``receiver db upgrade``, and a
runtime role with only SELECT, INSERT, UPDATE, DELETE and the sequences' USAGE, which ingests and
runs the worker, and cannot change a table."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError

from receiver import Context, Notification, Router
from receiver.config import settings_from_mapping
from receiver.runtime.services import build_worker
from receiver.sources import dedup_key
from receiver.store import Incoming, NoteFilter, Store, make_engine
from receiver.worker.routing import Routing
from tests.conftest import base_config, postgres_url

pytestmark = [pytest.mark.postgres, pytest.mark.anyio]

# What the README tells the owner to grant the runtime role (README: "Two PostgreSQL roles").
GRANTS = (
    "GRANT USAGE ON SCHEMA {schema} TO {runtime}",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {runtime}",
    "GRANT USAGE ON ALL SEQUENCES IN SCHEMA {schema} TO {runtime}",
)


@pytest.fixture
def roles() -> Iterator[tuple[str, str]]:
    """A schema of its own in the test database (so that the grants touch nothing else) and a
    runtime role (roles are the server's, not the database's: a unique name, dropped after).
    Yields the owner's URL and the runtime role's, both with that schema as search path."""
    url = postgres_url()
    if url is None:
        pytest.skip("needs RECEIVER_TEST_POSTGRES_URL")
    suffix = uuid.uuid4().hex[:8]
    schema, runtime = f"roles_{suffix}", f"receiver_runtime_{suffix}"
    admin = make_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
        conn.execute(text(f"CREATE ROLE {runtime} LOGIN"))
    base = make_url(url.replace("postgresql://", "postgresql+psycopg://", 1))
    options = {"options": f"-csearch_path={schema}"}
    owner_url = base.update_query_dict(options).render_as_string(hide_password=False)
    runtime_url = (
        base.set(username=runtime).update_query_dict(options).render_as_string(hide_password=False)
    )
    try:
        yield owner_url, runtime_url
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
            conn.execute(text(f"DROP OWNED BY {runtime}"))
            conn.execute(text(f"DROP ROLE {runtime}"))
        admin.dispose()


def grant(owner: Engine, runtime_url: str) -> None:
    runtime = make_url(runtime_url).username
    with owner.begin() as conn:
        schema = conn.execute(text("SELECT current_schema()")).scalar_one()
        for statement in GRANTS:
            conn.execute(text(statement.format(schema=schema, runtime=runtime)))


async def test_the_runtime_role_ingests_and_works_after_the_owner_upgrades_and_cannot_ddl(
    roles: tuple[str, str],
) -> None:
    owner_url, runtime_url = roles
    owner = Store(owner_url)
    owner.upgrade_schema()
    grant(owner.engine, runtime_url)
    owner.close()

    settings = settings_from_mapping(base_config(runtime_url), origin="test")
    store = Store(runtime_url)
    try:
        store.check_schema()  # what serve and worker do at start: reads only
        body = json.dumps({"evento": "duimp.registro", "dados": {"numero": "26BR1"}}).encode()
        [receipt] = store.append_now(
            [Incoming("pucomex", None, "203.0.113.7", {}, body, dedup_key("pucomex", body))]
        )
        router = Router()
        handled: list[str] = []

        @router.on("pucomex", "duimp.registro")
        async def fetch(note: Notification, ctx: Context) -> None:
            handled.append(note.id)
            await ctx.save("duimp", key=note.idempotency_key, value={"numero": "26BR1"})

        worker = build_worker(settings, store, Routing([router], settings.sources))
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop, grace_seconds=1))
        try:
            for _ in range(500):
                if store.note(receipt.id)["status"] == "done":  # type: ignore[index]
                    break
                await asyncio.sleep(0.02)
        finally:
            stop.set()
            await task
        assert handled == [receipt.id]
        assert [row["status"] for row in store.notes(NoteFilter())] == ["done"]
        assert [job["status"] for job in store.jobs_of(receipt.id)] == ["done"]

        for ddl in (
            "CREATE TABLE intruder (id INTEGER)",
            "ALTER TABLE notifications ADD COLUMN intruder TEXT",
            "DROP TABLE handler_results",
        ):
            with (
                pytest.raises(ProgrammingError, match=r"permission denied|must be owner"),
                store.engine.begin() as conn,
            ):
                conn.execute(text(ddl))
    finally:
        store.close()
