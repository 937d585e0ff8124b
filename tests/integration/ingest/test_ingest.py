"""The ingest app in-process against a real store: every row of the answers table, in order."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import Message

from receiver.config import Settings
from receiver.errors import StoreUnavailable
from receiver.ids import new_id
from receiver.ingest.allowlist import Allowlist
from receiver.ingest.app import create_app
from receiver.sources import dedup_key
from receiver.store import Incoming, Receipt, Store
from receiver.store.writer import BatchWriter
from tests.conftest import (
    ALLOWLIST,
    PUCOMEX_OLD_TOKEN,
    PUCOMEX_TOKEN,
    SINTEGRE_PASSWORD,
    SINTEGRE_USER,
    AppClient,
    bearer,
    fresh_database,
    migrated,
)

pytestmark = pytest.mark.anyio

BODY = b'{"evento":"duimp.registro","dataHora":"2026-11-22T10:00:00-03:00","dados":{"numero":"24BR0000012345","versao":"1"}}'

# BODY as the writer receives it once ingest has checked it, for the tests that commit directly.
ITEM = Incoming("pucomex", None, "203.0.113.7", {}, BODY, dedup_key("pucomex", BODY))


def webhook_scope(*extra_headers: tuple[bytes, bytes]) -> dict[str, Any]:
    """The ASGI scope of an authorised POST to /webhooks/pucomex, for driving the app by hand."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/webhooks/pucomex",
        "raw_path": b"/webhooks/pucomex",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"authorization", f"Bearer {PUCOMEX_TOKEN}".encode()), *extra_headers],
        "client": ("203.0.113.7", 1234),
        "server": ("receiver.test", 80),
    }


async def test_accepted_notification_is_stored_byte_for_byte(ingest: AppClient) -> None:
    async with ingest.client() as client:
        answer = await client.post(
            "/webhooks/pucomex",
            content=BODY,
            headers={**bearer(), "Content-Type": "application/json", "X-Trace": "abc"},
        )
    assert answer.status_code == 200
    reply = answer.json()
    assert reply["duplicate"] is False
    row = ingest.store.note(reply["id"])
    assert row is not None
    assert row["body"] == BODY
    assert row["source"] == "pucomex"
    assert row["client_ip"] == "203.0.113.7"
    assert row["duplicate_of"] is None
    assert row["status"] == "pending"
    assert row["received_at"].tzinfo is not None
    headers = json.loads(row["headers"])
    assert headers["x-trace"] == "abc"
    assert "authorization" not in headers
    assert PUCOMEX_TOKEN not in row["headers"]


async def test_path_event_is_kept(ingest: AppClient) -> None:
    async with ingest.client() as client:
        answer = await client.post(
            "/webhooks/pucomex/duimp.desembaraco", content=b"{}", headers=bearer()
        )
    assert answer.status_code == 200
    row = ingest.store.note(answer.json()["id"])
    assert row is not None and row["event"] == "duimp.desembaraco"


async def test_repeat_is_a_receipt_pointing_at_the_original(ingest: AppClient) -> None:
    async with ingest.client() as client:
        first = (await client.post("/webhooks/pucomex", content=BODY, headers=bearer())).json()
        second = (await client.post("/webhooks/pucomex", content=BODY, headers=bearer())).json()
    assert first["duplicate"] is False
    assert second["duplicate"] is True
    receipt = ingest.store.note(second["id"])
    assert receipt is not None
    assert receipt["duplicate_of"] == first["id"]
    assert receipt["status"] == "duplicate"


async def test_hundred_parallel_repeats_give_one_original(ingest: AppClient) -> None:
    async with ingest.client() as client:
        answers = await asyncio.gather(
            *(client.post("/webhooks/pucomex", content=BODY, headers=bearer()) for _ in range(100))
        )
    assert [a.status_code for a in answers] == [200] * 100
    replies = [a.json() for a in answers]
    originals = [r for r in replies if not r["duplicate"]]
    assert len(originals) == 1
    rows = [ingest.store.note(r["id"]) for r in replies]
    assert all(row is not None for row in rows)
    assert {row["duplicate_of"] for row in rows if row and row["duplicate_of"]} == {
        originals[0]["id"]
    }


@pytest.mark.parametrize(
    ("path", "ip", "headers", "status"),
    [
        ("/webhooks/unknown", "203.0.113.7", {}, 404),
        ("/webhooks/pucomex", "198.51.100.10", {}, 403),  # sintegre's address, not pucomex's
        ("/webhooks/pucomex", "203.0.114.1", {}, 403),
        ("/webhooks/pucomex", "203.0.113.7", {}, 401),
        ("/webhooks/pucomex", "203.0.113.7", {"Authorization": "Bearer wrong"}, 401),
        ("/webhooks/pucomex", "203.0.113.7", {"Authorization": f"Basic {PUCOMEX_TOKEN}"}, 401),
        ("/webhooks/pucomex", "203.0.113.7", {"Authorization": f"bearer {PUCOMEX_TOKEN}"}, 200),
        ("/webhooks/pucomex", "203.0.113.7", {"Authorization": f"Bearer {PUCOMEX_OLD_TOKEN}"}, 200),
        ("/webhooks/invoicy", "192.0.2.44", {}, 200),  # no credentials configured
        ("/webhooks/invoicy", "203.0.113.7", {}, 403),
        ("/webhooks/pucomex", "2001:db8:1::5", {"Authorization": f"Bearer {PUCOMEX_TOKEN}"}, 200),
        ("/webhooks/pucomex", "2001:db8:2::5", {"Authorization": f"Bearer {PUCOMEX_TOKEN}"}, 403),
        (
            "/webhooks/pucomex",
            "::ffff:203.0.113.9",
            {"Authorization": f"Bearer {PUCOMEX_TOKEN}"},
            200,
        ),
        (
            "/webhooks/pucomex",
            "::ffff:203.0.114.9",
            {"Authorization": f"Bearer {PUCOMEX_TOKEN}"},
            403,
        ),
    ],
)
async def test_answers_table(
    ingest: AppClient, path: str, ip: str, headers: dict[str, str], status: int
) -> None:
    before = ingest.store.count_notes()
    async with ingest.client(ip) as client:
        answer = await client.post(path, content=b'{"evento":"x"}', headers=headers)
    assert answer.status_code == status
    assert ingest.store.count_notes() == before + (1 if status == 200 else 0)
    if status == 401:
        assert answer.headers["www-authenticate"].startswith("Bearer realm=")


async def test_ipv4_mapped_peer_is_recorded_as_ipv4(ingest: AppClient) -> None:
    async with ingest.client("::ffff:203.0.113.9") as client:
        answer = await client.post("/webhooks/pucomex", content=b"{}", headers=bearer())
    row = ingest.store.note(answer.json()["id"])
    assert row is not None and row["client_ip"] == "203.0.113.9"


async def test_basic_credentials(ingest: AppClient) -> None:
    good = base64.b64encode(f"{SINTEGRE_USER}:{SINTEGRE_PASSWORD}".encode()).decode()
    wrong_user = base64.b64encode(f"onz:{SINTEGRE_PASSWORD}".encode()).decode()
    async with ingest.client("198.51.100.10") as client:
        ok = await client.post(
            "/webhooks/sintegre", content=b"{}", headers={"Authorization": f"Basic {good}"}
        )
        bad = await client.post(
            "/webhooks/sintegre", content=b"{}", headers={"Authorization": f"Basic {wrong_user}"}
        )
        garbage = await client.post(
            "/webhooks/sintegre", content=b"{}", headers={"Authorization": "Basic %%%"}
        )
        non_ascii = await client.post(
            "/webhooks/sintegre", content=b"{}", headers={b"Authorization": "Basic çãé".encode()}
        )
    assert ok.status_code == 200
    assert (bad.status_code, garbage.status_code, non_ascii.status_code) == (401, 401, 401)
    assert bad.headers["www-authenticate"] == 'Basic realm="sintegre"'


@pytest.mark.parametrize(
    ("peer", "forwarded", "status"),
    [
        # Untrusted peer naming an allowed address: the header is ignored.
        ("198.18.0.1", "203.0.113.7", 403),
        # Trusted proxy forwarding an allowed client.
        ("10.1.2.3", "203.0.113.7", 200),
        # Client forged the left part; the proxy appended the real (denied) address.
        ("10.1.2.3", "203.0.113.7, 198.18.0.9", 403),
        # Two trusted proxies in a row: walk past both.
        ("10.1.2.3", "203.0.113.7, 10.9.9.9", 200),
        # Unreadable hop: nobody gets in.
        ("10.1.2.3", "203.0.113.7, not-an-ip", 403),
        # Trusted proxy without the header is the client itself.
        ("10.1.2.3", None, 403),
    ],
)
async def test_forwarded_for_honoured_only_from_trusted_proxies(
    ingest: AppClient, peer: str, forwarded: str | None, status: int
) -> None:
    headers = bearer()
    if forwarded is not None:
        headers["X-Forwarded-For"] = forwarded
    async with ingest.client(peer) as client:
        answer = await client.post("/webhooks/pucomex", content=b"{}", headers=headers)
    assert answer.status_code == status


async def test_forged_forwarded_for_thousand_times(ingest: AppClient) -> None:
    async with ingest.client("198.18.0.1") as client:
        answers = await asyncio.gather(
            *(
                client.post(
                    "/webhooks/pucomex",
                    content=b"{}",
                    headers={
                        **bearer(),
                        "X-Forwarded-For": "203.0.113.7",
                        "Forwarded": "for=203.0.113.7",
                    },
                )
                for _ in range(1000)
            )
        )
    assert {a.status_code for a in answers} == {403}
    assert ingest.store.count_notes() == 0


async def test_body_at_limit_is_stored_and_over_limit_refused(ingest: AppClient) -> None:
    async with ingest.client() as client:
        at_limit = await client.post("/webhooks/pucomex", content=b"a" * 4096, headers=bearer())
        over = await client.post("/webhooks/pucomex", content=b"a" * 4097, headers=bearer())
    assert at_limit.status_code == 200
    assert over.status_code == 413
    assert ingest.store.count_notes() == 1


async def test_oversized_body_refused_without_reading_the_rest(
    settings: Settings, store: Store
) -> None:
    """Content-Length over the limit: 413 before a single body chunk is read."""
    app = create_app(settings, store=store, allowlist=Allowlist.from_mapping(ALLOWLIST))
    store.start()
    chunks_read = 0

    async def receive() -> dict[str, Any]:
        nonlocal chunks_read
        chunks_read += 1
        return {"type": "http.request", "body": b"x" * 1024, "more_body": True}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope = webhook_scope((b"content-length", b"10000000"))
    await app(scope, receive, send)
    assert sent[0]["status"] == 413
    assert chunks_read == 0

    # Chunked, no length: stops reading at the first chunk past the limit.
    scope = webhook_scope()
    sent.clear()
    await app(scope, receive, send)
    assert sent[0]["status"] == 413
    assert chunks_read == 5  # 4 KiB limit, 1 KiB chunks: the fifth crosses it
    assert store.count_notes() == 0


@contextlib.contextmanager
def inserts_refused(store: Store) -> Iterator[None]:
    """The database itself refuses every new notification (a trigger), until the block ends."""
    if store.dialect == "sqlite":
        # A table that is not there: an OperationalError, as SQLite's own failures are (disk
        # full, I/O error). RAISE(ABORT) would be an IntegrityError, which is one item's fault.
        create = [
            "CREATE TRIGGER refuse_notes BEFORE INSERT ON notifications "
            "BEGIN INSERT INTO disk_full_injected VALUES (1); END"
        ]
        drop = ["DROP TRIGGER refuse_notes"]
    else:
        create = [
            "CREATE OR REPLACE FUNCTION refuse_notes() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'disk full (injected)'; END $$",
            "CREATE TRIGGER refuse_notes BEFORE INSERT ON notifications "
            "FOR EACH ROW EXECUTE FUNCTION refuse_notes()",
        ]
        drop = ["DROP TRIGGER refuse_notes ON notifications", "DROP FUNCTION refuse_notes()"]
    with store.engine.begin() as conn:
        for statement in create:
            conn.exec_driver_sql(statement)
    try:
        yield
    finally:
        with store.engine.begin() as conn:
            for statement in drop:
                conn.exec_driver_sql(statement)


def hold_write_lock(
    store: Store, seconds: float, release: threading.Event | None = None
) -> threading.Thread:
    """Another connection takes the lock that inserting a notification needs, for ``seconds``
    (or until ``release`` is set)."""
    locked = threading.Event()
    release = release if release is not None else threading.Event()

    def hold() -> None:
        # On SQLite the BEGIN IMMEDIATE that begin() issues is the write lock itself.
        with store.engine.connect() as conn, conn.begin():
            if store.dialect != "sqlite":
                conn.exec_driver_sql("LOCK TABLE notifications IN SHARE ROW EXCLUSIVE MODE")
            locked.set()
            release.wait(seconds)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert locked.wait(10), "could not take the write lock"
    return holder


def test_the_sqlite_writer_asks_again_for_the_write_lock_until_it_is_free(
    sqlite_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every millisecond, not on SQLite's busy handler, which sleeps up to 100 ms between tries."""
    polls: list[float] = []
    real_sleep = time.sleep

    def counting_sleep(seconds: float) -> None:
        if threading.current_thread() is threading.main_thread():  # the writer's, not the holder's
            polls.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr(time, "sleep", counting_sleep)
    writer = BatchWriter(sqlite_store.engine)
    try:
        holder = hold_write_lock(sqlite_store, 0.3)
        receipts = writer.commit([(ITEM, new_id())])
        holder.join()
    finally:
        writer.close()
    assert not isinstance(receipts, StoreUnavailable)
    [receipt] = receipts
    assert isinstance(receipt, Receipt) and sqlite_store.note(receipt.id) is not None
    assert len(polls) >= 10  # asked again and again while the lock was held elsewhere
    assert set(polls) == {BatchWriter.LOCK_POLL_SECONDS}


def test_the_sqlite_writer_gives_up_on_a_write_lock_held_past_its_wait(
    sqlite_store: Store,
) -> None:
    writer = BatchWriter(sqlite_store.engine, timeout_seconds=0.05)
    try:
        holder = hold_write_lock(sqlite_store, 0.5)
        outcome = writer.commit([(ITEM, new_id())])
        assert isinstance(outcome, StoreUnavailable)
        holder.join()
        receipts = writer.commit([(ITEM, new_id())])  # free again: the next batch goes through
    finally:
        writer.close()
    assert not isinstance(receipts, StoreUnavailable)
    assert sqlite_store.count_notes() == 1


async def test_store_that_cannot_commit_answers_503(ingest: AppClient) -> None:
    with inserts_refused(ingest.store):
        async with ingest.client() as client:
            answer = await client.post("/webhooks/pucomex", content=BODY, headers=bearer())
        assert answer.status_code == 503
        assert answer.headers["retry-after"] == "5"
        assert ingest.store.count_notes() == 0
        async with ingest.admin() as admin:
            # The store still answers reads, but it is not ready: it cannot commit.
            assert (await admin.get("/readyz")).status_code == 503
    async with ingest.client() as client, ingest.admin() as admin:
        answer = await client.post("/webhooks/pucomex", content=BODY, headers=bearer())
        assert answer.status_code == 200  # recovered by itself
        assert (await admin.get("/readyz")).status_code == 200


def test_a_batch_append_the_database_refuses_is_store_unavailable(store: Store) -> None:
    with inserts_refused(store), pytest.raises(StoreUnavailable, match="commit failed"):
        store.append_now([ITEM])
    assert store.count_notes() == 0
    (receipt,) = store.append_now([ITEM])  # the same store takes it once the database does
    assert store.note(receipt.id) is not None


@pytest.mark.postgres
def test_a_batch_whose_commit_fails_is_acknowledged_to_nobody(tmp_path: Path) -> None:
    """PostgreSQL checks a deferred constraint at COMMIT: the insert went through, the commit not."""
    store = Store(fresh_database("postgres", tmp_path))
    migrated(store)
    writer = BatchWriter(store.engine)

    def drop_trigger() -> None:
        with store.engine.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS refuse_at_commit ON notifications")
            conn.exec_driver_sql("DROP FUNCTION IF EXISTS refuse_at_commit()")

    try:
        with store.engine.begin() as conn:
            conn.exec_driver_sql(
                "CREATE OR REPLACE FUNCTION refuse_at_commit() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'no space at commit (injected)'; END $$"
            )
            conn.exec_driver_sql(
                "CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT ON notifications "
                "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_at_commit()"
            )
        outcome = writer.commit([(ITEM, new_id())])
        assert isinstance(outcome, StoreUnavailable)
        assert store.count_notes() == 0
        drop_trigger()
        # The same writer commits the next batch, on a fresh connection.
        receipts = writer.commit([(ITEM, new_id())])
        assert not isinstance(receipts, StoreUnavailable)
        [receipt] = receipts
        assert isinstance(receipt, Receipt) and store.note(receipt.id) is not None
        assert store.count_notes() == 1
    finally:
        # Also when an assertion failed: a trigger left behind would refuse every later run's
        # inserts into this database (fresh_database drops our tables, and with them their
        # triggers, but not the function).
        drop_trigger()
        writer.close()
        store.close()


async def test_slow_commit_answers_503_before_the_deadline(
    make_settings: Any, store: Store
) -> None:
    settings = make_settings(ack_timeout_seconds=0.2)
    app = create_app(settings, store=store, allowlist=Allowlist.from_mapping(ALLOWLIST))
    store.start()

    # The commit stalls far longer than the deadline, so that "answered at the deadline" and
    # "answered when the commit ended" stay apart on a loaded machine.
    holder = hold_write_lock(store, 1.5)
    try:
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            started = asyncio.get_running_loop().time()
            answer = await client.post("/webhooks/pucomex", content=BODY, headers=bearer())
            elapsed = asyncio.get_running_loop().time() - started
        assert answer.status_code == 503
        assert "retry-after" in answer.headers
        assert elapsed < 1.0, f"answered after {elapsed:.2f} s: waited for the stalled commit"
    finally:
        await asyncio.to_thread(holder.join)


async def test_unparseable_body_is_stored_anyway(ingest: AppClient) -> None:
    async with ingest.client() as client:
        answer = await client.post(
            "/webhooks/pucomex", content=b"\xff\xfe not json", headers=bearer()
        )
    assert answer.status_code == 200
    row = ingest.store.note(answer.json()["id"])
    assert row is not None and row["body"] == b"\xff\xfe not json"


async def test_health_readiness_and_metrics_are_on_the_admin_listener_only(
    ingest: AppClient,
) -> None:
    async with ingest.admin() as admin:
        assert (await admin.get("/healthz")).status_code == 200
        assert (await admin.get("/readyz")).status_code == 200
        metrics = await admin.get("/metrics")
    assert "receiver_requests_total" in metrics.text
    async with ingest.client() as client:
        assert (await client.get("/webhooks/pucomex")).status_code == 405
        for path in ("/metrics", "/healthz", "/readyz", "/"):
            assert (await client.get(path)).status_code == 404, path


def scraped(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics answer, by name and labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_count_what_ingest_received_stored_and_refused(ingest: AppClient) -> None:
    # The counters belong to the process, which other tests share: compare before and after.
    def counted(samples: dict[Any, float], name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    async with ingest.client() as client, ingest.admin() as admin:
        before = scraped((await admin.get("/metrics")).text)
        for n in range(3):
            body = b'{"evento":"duimp.registro","dados":{"numero":"%d"}}' % n
            assert (await client.post("/webhooks/pucomex", content=body, headers=bearer())).json()[
                "duplicate"
            ] is False
        repeat = await client.post("/webhooks/pucomex", content=body, headers=bearer())
        assert repeat.json()["duplicate"] is True
        wrong = {"Authorization": "Bearer not-the-token"}
        assert (
            await client.post("/webhooks/pucomex", content=b"{}", headers=wrong)
        ).status_code == 401
        after = scraped((await admin.get("/metrics")).text)

    def delta(name: str, **labels: str) -> float:
        return counted(after, name, **labels) - counted(before, name, **labels)

    assert delta("receiver_requests_total", source="pucomex") == 5
    assert delta("receiver_stored_total", source="pucomex") == 3
    assert delta("receiver_duplicates_total", source="pucomex") == 1
    assert delta("receiver_rejected_total", source="pucomex", reason="credentials") == 1
    # A configured source shows before its first request, at zero or more.
    assert ("receiver_requests_total", (("source", "invoicy"),)) in after


async def test_slow_body_is_cut_off_with_408(make_settings: Any, store: Store) -> None:
    settings = make_settings(server={"read_timeout_seconds": 0.2})
    app = create_app(settings, store=store, allowlist=Allowlist.from_mapping(ALLOWLIST))
    store.start()

    async def trickle() -> dict[str, Any]:
        await asyncio.sleep(0.1)  # a byte every 100 ms, never finishing in time
        return {"type": "http.request", "body": b"x", "more_body": True}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope = webhook_scope()
    started = asyncio.get_running_loop().time()
    await app(scope, trickle, send)
    assert sent[0]["status"] == 408
    assert asyncio.get_running_loop().time() - started < 1
    assert store.count_notes() == 0
