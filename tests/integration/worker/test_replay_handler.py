"""``receiver replay ID --handler NAME`` against the real stores: one handler of one notification
runs again from its first attempt, the others are left alone; what cannot be replayed says why."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from receiver import Context, Notification, Router
from receiver.config import Settings
from receiver.runtime.cli import main
from receiver.runtime.services import build_worker
from receiver.store import Store
from receiver.worker import replay
from receiver.worker.routing import Routing
from tests.conftest import base_config
from tests.integration.worker.test_worker import duimp, incoming, statuses, until

pytestmark = pytest.mark.anyio


def two_handlers(broken: list[bool], runs: list[str]) -> Router:
    router = Router()

    @router.on("pucomex", "duimp.registro")
    async def keep(note: Notification, ctx: Context) -> None:
        runs.append(f"keep {ctx.attempt}")

    @router.on("pucomex", "duimp.registro")
    async def forward(note: Notification, ctx: Context) -> None:
        runs.append(f"forward {ctx.attempt}")
        if broken[0]:
            raise ValueError("the ERP refused the row")

    return router


async def work(store: Store, settings: Settings, router: Router, condition: Any) -> None:
    worker = build_worker(settings, store, Routing([router], settings.sources))
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop, grace_seconds=1))
    try:
        await until(condition)
    finally:
        stop.set()
        await task


def jobs(store: Store, note_id: str) -> dict[str, tuple[str, int]]:
    return {
        job["handler"].rsplit(".", 1)[-1]: (job["status"], job["attempts"])
        for job in store.jobs_of(note_id)
    }


async def test_one_handler_runs_again_and_the_others_are_left_alone(
    store: Store, settings: Settings
) -> None:
    broken: list[bool] = [True]
    runs: list[str] = []
    router = two_handlers(broken, runs)
    [receipt] = store.append_now([incoming(duimp("31"))])
    await work(store, settings, router, lambda: statuses(store)[receipt.id] == "dead")
    assert jobs(store, receipt.id) == {"keep": ("done", 1), "forward": ("dead", 3)}

    broken[0] = False
    runs.clear()
    done = replay.replay_handler(store, receipt.id, "forward")
    assert done.handler.endswith(".forward") and done.previous_status == "dead"
    assert done.previous_error == "ValueError: the ERP refused the row"
    assert statuses(store)[receipt.id] == "pending"
    await work(store, settings, router, lambda: statuses(store)[receipt.id] == "done")
    assert runs == ["forward 1"]  # keep did not run again; forward from its first attempt
    assert jobs(store, receipt.id) == {"keep": ("done", 1), "forward": ("done", 1)}

    # A receipt of the same content stands for its original.
    [repeat] = store.append_now([incoming(duimp("31"))])
    assert replay.replay_handler(store, repeat.id, done.handler).note_id == receipt.id


async def test_what_cannot_be_replayed_says_why(store: Store, settings: Settings) -> None:
    router = two_handlers([False], [])
    [receipt] = store.append_now([incoming(duimp("32"))])
    with pytest.raises(replay.ReplayRefused, match=r"no handler jobs .* `receiver replay "):
        replay.replay_handler(store, receipt.id, "keep")  # not routed yet
    await work(store, settings, router, lambda: statuses(store)[receipt.id] == "done")
    with pytest.raises(replay.ReplayRefused, match=r"no job of handler 'fetch' \(its: .*keep"):
        replay.replay_handler(store, receipt.id, "fetch")
    with pytest.raises(KeyError):
        replay.replay_handler(store, "01NOSUCHNOTIFICATION00000", "keep")


def test_the_command_replays_one_handler(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    config = tmp_path / "receiver.yaml"
    config.write_text(yaml.safe_dump(base_config(url)))
    store = Store(url)
    try:
        store.upgrade_schema()
        settings = Settings.model_validate(base_config(url))
        [receipt] = store.append_now([incoming(duimp("33"))])
        asyncio.run(
            work(
                store,
                settings,
                two_handlers([True], []),
                lambda: statuses(store)[receipt.id] == "dead",
            )
        )
    finally:
        store.close()
    runner = CliRunner()
    args = ["replay", receipt.id, "--handler", "forward", "--config", str(config)]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert (
        "replaying handler tests.integration.worker.test_replay_handler.two_handlers.<locals>.forward"
        in (result.output)
    )
    assert "(it was dead: ValueError: the ERP refused the row)" in result.output
    refused = runner.invoke(
        main, ["replay", receipt.id, "--handler", "nothing", "--config", str(config)]
    )
    assert refused.exit_code == 1
    assert "has no job of handler 'nothing'" in refused.output
    usage = runner.invoke(
        main, ["replay", receipt.id, receipt.id, "--handler", "x", "--config", str(config)]
    )
    assert usage.exit_code == 2 and "--handler goes with one notification id" in usage.output
