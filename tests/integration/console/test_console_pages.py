"""The console's pages and actions through its ASGI app, on a real SQLite file and the real
PostgreSQL server: login, roles, CSRF, headers, the inbox's filters, search and pages, one
notification, dead letters and quarantine with their confirmations, the audit log."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import insert, select, update

from receiver.config import Settings, settings_from_mapping
from receiver.console import inbox as inbox_module
from receiver.console import standalone_app
from receiver.store import AUDIT, EPISODES, JOBS, NOTES, Store, utcnow
from tests.conftest import base_config
from tests.console_support import (
    OPERATOR_PASSWORD,
    VIEWER_PASSWORD,
    body_of,
    bury,
    console_section,
    csrf_of,
    log_in,
    store_notes,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def console_settings(database_url: str) -> Settings:
    return settings_from_mapping(
        base_config(database_url, console=console_section()), origin="test"
    )


@pytest.fixture
def store(console_settings: Settings) -> Iterator[Store]:
    store = Store(console_settings.database_url)
    store.upgrade_schema()
    yield store
    store.close()


def client_for(settings: Settings, store: Store, peer: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=standalone_app(settings, store), client=(peer, 50000))
    # https: the session cookie is Secure, and a client keeps it only for https.
    return httpx.AsyncClient(transport=transport, base_url="https://console.test")


async def test_pages_need_a_login_and_the_login_page_is_locked_down(
    console_settings: Settings, store: Store
) -> None:
    async with client_for(console_settings, store) as client:
        for path in ("/console/", "/console/inbox", "/console/dead", "/console/notes/X"):
            answer = await client.get(path)
            assert answer.status_code == 303, path
            assert answer.headers["location"] == "/console/login"
        login = await client.get("/console/login")
    assert login.status_code == 200
    policy = login.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "'unsafe-inline'" not in policy
    assert "frame-ancestors 'none'" in policy
    assert login.headers["x-frame-options"] == "DENY"
    assert login.headers["cache-control"] == "no-store"
    cookie = login.headers["set-cookie"].lower()
    assert "secure" in cookie and "httponly" in cookie and "samesite=strict" in cookie
    assert "<script>" not in login.text  # scripts only by src, never inline


async def test_a_wrong_password_is_refused_audited_and_rate_limited(
    database_url: str,
) -> None:
    settings = settings_from_mapping(
        base_config(database_url, console=console_section(login_attempts=2)), origin="test"
    )
    store = Store(settings.database_url)
    store.upgrade_schema()
    try:
        async with client_for(settings, store) as client:
            first = await log_in(client, "olivia", "wrong")
            second = await log_in(client, "nobody", "wrong")
            assert (first.status_code, second.status_code) == (401, 401)
            assert "Wrong user name or password" in first.text
            # Two failures from this address: the right password is refused for a while too.
            third = await log_in(client, "olivia", OPERATOR_PASSWORD)
            assert third.status_code == 429
            assert int(third.headers["retry-after"]) > 0
        with store.reading() as conn:
            actions = [row.action for row in conn.execute(select(AUDIT).order_by(AUDIT.c.id))]
        assert actions == ["login failed", "login failed", "login refused (rate limit)"]
    finally:
        store.close()


async def test_login_without_the_csrf_token_is_refused(
    console_settings: Settings, store: Store
) -> None:
    async with client_for(console_settings, store) as client:
        await client.get("/console/login")
        answer = await client.post(
            "/console/login", data={"name": "olivia", "password": OPERATOR_PASSWORD}
        )
    assert answer.status_code == 403
    assert "CSRF" in answer.text


async def test_inbox_filters_search_and_pages(
    console_settings: Settings, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = store_notes(
        store,
        [
            ("pucomex", "duimp.registro", body_of("duimp.registro", f"26BR{n:010d}"))
            for n in range(60)
        ]
        + [("sintegre", "arquivo.publicado", b'{"arquivo": "PMO_2026.zip"}')],
    )
    async with client_for(console_settings, store) as client:
        assert (await log_in(client, "victor", VIEWER_PASSWORD)).status_code == 303
        # Newest first (ids are time-ordered; those of one batch share a millisecond), 50 a page,
        # and a link to the older ones.
        newest = sorted(ids, reverse=True)
        first = await client.get("/console/inbox")
        assert first.status_code == 200
        shown = [note_id for note_id in newest if note_id in first.text]
        assert shown == newest[:50]
        assert [first.text.index(i) for i in shown] == sorted(first.text.index(i) for i in shown)
        assert f"before={newest[49]}" in first.text
        older = await client.get(f"/console/inbox?before={newest[49]}")
        assert [note_id for note_id in newest if note_id in older.text] == newest[50:]
        by_source = await client.get("/console/inbox?source=sintegre")
        assert ids[-1] in by_source.text and ids[0] not in by_source.text
        duimp = await client.get("/console/inbox?q=26BR0000000007")
        assert ids[7] in duimp.text and ids[8] not in duimp.text
        by_id = await client.get(f"/console/inbox?q={ids[3].lower()}")
        assert ids[3] in by_id.text and ids[4] not in by_id.text
        none = await client.get("/console/inbox?q=no-such-text&status=dead")
        assert "No notification matches" in none.text
        bad = await client.get("/console/inbox?since=yesterday&status=bogus")
        assert "is not a date" in bad.text and "is not one of" in bad.text
        # A small window makes a rare match take more than one page view, said so.
        monkeypatch.setattr(inbox_module, "WINDOW", 20)
        oldest = min(ids[:60])
        wanted = f"26BR{ids.index(oldest):010d}"
        windowed = await client.get(f"/console/inbox?q={wanted}")
        assert oldest not in windowed.text and "Search older" in windowed.text
        for _ in range(3):  # 61 rows, 20 a window: found by the third "Search older" at most
            if oldest in windowed.text:
                break
            link = re.search(r'href="(/console/inbox\?[^"]*before=[^"]*)"', windowed.text)
            assert link is not None
            windowed = await client.get(link.group(1).replace("&amp;", "&"))
        assert oldest in windowed.text


async def test_a_body_with_markup_is_shown_as_text(
    console_settings: Settings, store: Store
) -> None:
    [note_id] = store_notes(
        store, [("pucomex", "duimp.registro", b'{"x": "<script>alert(1)</script><img src=x>"}')]
    )
    async with client_for(console_settings, store) as client:
        await log_in(client, "victor", VIEWER_PASSWORD)
        page = await client.get(f"/console/notes/{note_id}")
    assert page.status_code == 200
    assert "<script>alert(1)" not in page.text and "<img src=x>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


async def test_a_viewer_sees_no_replay_button_and_cannot_replay(
    console_settings: Settings, store: Store
) -> None:
    [note_id] = store_notes(store, [("pucomex", "duimp.registro", body_of("duimp.registro", "1"))])
    job_id = bury(store, note_id, "handlers.x:h", "RuntimeError: down")
    async with client_for(console_settings, store) as client:
        await log_in(client, "victor", VIEWER_PASSWORD)
        page = await client.get(f"/console/notes/{note_id}")
        assert "replay" not in page.text.split("<main>")[1].lower()
        dead = await client.get("/console/dead")
        assert "RuntimeError: down" in dead.text and "<button" not in dead.text.split("<main>")[1]
        refused = await client.post(
            f"/console/notes/{note_id}/replay", data={"csrf": csrf_of(page.text)}
        )
        refused_dead = await client.post(
            "/console/dead/replay", data={"csrf": csrf_of(page.text), "scope": "everything"}
        )
    assert refused.status_code == refused_dead.status_code == 403
    with store.reading() as conn:
        assert conn.execute(select(JOBS.c.status).where(JOBS.c.id == job_id)).scalar_one() == "dead"


async def test_an_operator_replays_a_dead_letter_after_a_confirmation(
    console_settings: Settings, store: Store
) -> None:
    notes = store_notes(
        store, [("pucomex", "duimp.registro", body_of("duimp.registro", str(n))) for n in range(3)]
    )
    jobs = [bury(store, note_id, "handlers.x:h", "RuntimeError: down") for note_id in notes]
    other = bury(store, store_notes(store, [("pucomex", "e", b"other")])[0], "handlers.y:h", "E")
    async with client_for(console_settings, store) as client:
        await log_in(client, "olivia", OPERATOR_PASSWORD)
        group = await client.get(
            "/console/dead/group?handler=handlers.x:h&error=RuntimeError: down"
        )
        token = csrf_of(group.text)
        # No token: refused, nothing replayed.
        assert (
            await client.post("/console/dead/replay", data={"scope": "group"})
        ).status_code == 403
        confirm = await client.post(
            "/console/dead/confirm",
            data={"csrf": token, "scope": "selection", "job": [str(jobs[0]), str(jobs[1])]},
        )
        assert "Replay 2 dead handler jobs?" in confirm.text
        done = await client.post(
            "/console/dead/replay",
            data={"csrf": token, "scope": "selection", "job": [str(jobs[0]), str(jobs[1])]},
        )
        assert done.status_code == 200 and "2 notification(s)" in done.text
        everything = await client.post(
            "/console/dead/confirm", data={"csrf": token, "scope": "everything"}
        )
        assert "Replay 2 dead handler jobs?" in everything.text  # jobs[2] and other
        audit_page = await client.get("/console/audit")
    with store.reading() as conn:
        statuses: dict[int, str] = {
            int(job_id): str(status)
            for job_id, status in conn.execute(select(JOBS.c.id, JOBS.c.status))
        }
    assert [statuses[j] for j in jobs] == ["pending", "pending", "dead"]
    assert statuses[other] == "dead"
    assert "replay dead letters" in audit_page.text and "olivia" in audit_page.text


async def test_replaying_a_notification_and_one_handler(
    console_settings: Settings, store: Store
) -> None:
    [note_id] = store_notes(store, [("pucomex", "duimp.registro", body_of("duimp.registro", "9"))])
    bury(store, note_id, "handlers.x:h", "boom")
    async with client_for(console_settings, store) as client:
        await log_in(client, "olivia", OPERATOR_PASSWORD)
        page = await client.get(f"/console/notes/{note_id}")
        token = csrf_of(page.text)
        one = await client.post(
            f"/console/notes/{note_id}/replay-handler",
            data={"csrf": token, "handler": "handlers.x:h"},
        )
        assert one.status_code == 303
        with store.reading() as conn:
            assert conn.execute(select(JOBS.c.status)).scalar_one() == "pending"
        unknown = await client.post(
            f"/console/notes/{note_id}/replay-handler", data={"csrf": token, "handler": "nope"}
        )
        assert unknown.status_code == 409  # refused, saying which handlers it has
        assert "has no job of handler &#39;nope&#39;" in unknown.text
        whole = await client.post(f"/console/notes/{note_id}/replay", data={"csrf": token})
        assert whole.status_code == 303
    with store.reading() as conn:
        assert (
            conn.execute(select(NOTES.c.routed).where(NOTES.c.id == note_id)).scalar_one() is False
        )
        assert conn.execute(select(JOBS.c.id)).first() is None


async def test_quarantine_is_grouped_and_routed_again(
    console_settings: Settings, store: Store
) -> None:
    ids = store_notes(store, [("pucomex", "unknown.event", f"q{n}".encode()) for n in range(3)])
    with store.engine.begin() as conn:
        conn.execute(
            update(NOTES)
            .where(NOTES.c.id.in_(ids))
            .values(status="quarantined", routed=True, error="no handler for unknown.event")
        )
    async with client_for(console_settings, store) as client:
        await log_in(client, "olivia", OPERATOR_PASSWORD)
        page = await client.get("/console/quarantine")
        assert "no handler for unknown.event" in page.text and ">3<" in page.text
        token = csrf_of(page.text)
        fields = {
            "csrf": token,
            "scope": "group",
            "source": "pucomex",
            "event": "unknown.event",
            "error": "no handler for unknown.event",
        }
        confirm = await client.post("/console/quarantine/confirm", data=fields)
        assert "Replay 3 quarantined notifications?" in confirm.text
        done = await client.post("/console/quarantine/replay", data=fields)
        assert "Routing 3" in done.text
    with store.reading() as conn:
        assert set(conn.execute(select(NOTES.c.status)).scalars()) == {"pending"}


async def test_a_trusted_proxy_names_the_user_and_nobody_else_can(
    database_url: str, tmp_path: Path
) -> None:
    settings = settings_from_mapping(
        base_config(
            database_url,
            console=console_section(
                trusted_header="X-Forwarded-User", trusted_header_proxies=["10.1.2.3/32"]
            ),
        ),
        origin="test",
    )
    store = Store(settings.database_url)
    store.upgrade_schema()
    try:
        async with client_for(settings, store, peer="10.1.2.3") as proxied:
            page = await proxied.get("/console/inbox", headers={"x-forwarded-user": "olivia"})
            assert page.status_code == 200 and "olivia" in page.text and "operator" in page.text
            stranger = await proxied.get("/console/inbox", headers={"x-forwarded-user": "sam"})
            assert stranger.status_code == 200 and "viewer" in stranger.text
        async with client_for(settings, store, peer="10.9.9.9") as direct:
            forged = await direct.get("/console/inbox", headers={"x-forwarded-user": "olivia"})
            assert forged.status_code == 303
    finally:
        store.close()


async def test_alerts_firing_and_resolved_are_shown(
    console_settings: Settings, store: Store
) -> None:
    now = utcnow()
    with store.engine.begin() as conn:
        conn.execute(
            insert(EPISODES),
            [
                {
                    "rule": "dead_letters",
                    "subject": "",
                    "summary": "2 new dead letters <b>",
                    "fired_at": now,
                    "seen_at": now,
                    "resolved_at": None,
                    "fired_sent": "log",
                    "resolved_sent": "",
                },
                {
                    "rule": "ingest_silent",
                    "subject": "pucomex",
                    "summary": "nothing received for 30 min",
                    "fired_at": now - timedelta(hours=2),
                    "seen_at": now - timedelta(hours=1),
                    "resolved_at": now - timedelta(hours=1),
                    "fired_sent": "log",
                    "resolved_sent": "log",
                },
            ],
        )
    async with client_for(console_settings, store) as client:
        await log_in(client, "victor", VIEWER_PASSWORD)
        page = await client.get("/console/alerts")
        home = await client.get("/console/")
    firing, resolved = page.text.split('id="resolved"')
    assert "dead_letters" in firing and "ingest_silent" not in firing
    assert "ingest_silent" in resolved and "nothing received for 30 min" in resolved
    assert "2 new dead letters &lt;b&gt;" in page.text
    assert "1 alert firing" in home.text and "dead_letters" in home.text


async def test_a_group_without_an_error_replays_only_its_own_jobs(
    console_settings: Settings, store: Store
) -> None:
    first, second = store_notes(
        store, [("pucomex", "duimp.registro", body_of("duimp.registro", str(n))) for n in (1, 2)]
    )
    silent = bury(store, first, "handlers.x:h", None)
    failed = bury(store, second, "handlers.x:h", "TimeoutError")
    async with client_for(console_settings, store) as client:
        await log_in(client, "olivia", OPERATOR_PASSWORD)
        dead = await client.get("/console/dead")
        assert 'name="without_error" value="1"' in dead.text
        fields = {"csrf": csrf_of(dead.text), "scope": "group", "handler": "handlers.x:h"}
        confirm = await client.post("/console/dead/confirm", data={**fields, "without_error": "1"})
        assert "Replay 1 dead handler job?" in confirm.text
        await client.post("/console/dead/replay", data={**fields, "without_error": "1"})
    with store.reading() as conn:
        statuses = {
            int(job_id): str(status)
            for job_id, status in conn.execute(select(JOBS.c.id, JOBS.c.status))
        }
    assert statuses == {silent: "pending", failed: "dead"}
