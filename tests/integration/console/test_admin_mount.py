"""The console on serve's admin listener only when receiver.yaml has a console: section, and
never in the webhook app."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from receiver.config import settings_from_mapping
from receiver.ingest.app import create_app
from receiver.runtime.admin import admin_app
from receiver.runtime.serving import admin_extra_routes
from receiver.store import Store
from tests.conftest import base_config
from tests.console_support import console_section

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("with_console", [True, False])
async def test_the_admin_listener_serves_the_console_only_when_configured(
    tmp_path: Path, with_console: bool
) -> None:
    url = f"sqlite:///{tmp_path / 'receiver.db'}"
    extra = {"console": console_section()} if with_console else {}
    settings = settings_from_mapping(base_config(url, **extra), origin="test")
    store = Store(url)
    store.upgrade_schema()

    async def ready() -> bool:
        return True

    try:
        app = admin_app(ready, extra=admin_extra_routes(settings, store))
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="https://admin.test") as admin:
            login = await admin.get("/console/login")
            bare = await admin.get("/console")
            health = await admin.get("/healthz")
        assert health.status_code == 200
        assert login.status_code == (200 if with_console else 404)
        assert bare.status_code == (307 if with_console else 404)
        webhook_app = create_app(settings, store=store)
        transport = httpx.ASGITransport(app=webhook_app, client=("203.0.113.7", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://hooks.test") as hooks:
            assert (await hooks.get("/console/login")).status_code == 404
    finally:
        store.close()
