"""The benchmark's own verdict: its store check reads a real SQLite store and fails on a lost 200."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loadtests.bench.proc import CpuUse, cpu_seconds, cpu_use, machine_busy
from loadtests.bench.runs import bare_process_counts, check_stored
from loadtests.bench.targets import (
    GROUP_COMMIT_ENV,
    stored_ids_postgres,
    stored_ids_sqlite,
    write_config,
)
from loadtests.bench.wrk import Load, answer_id
from receiver.config import load_settings
from receiver.sources import dedup_key
from receiver.store import Incoming, Store
from tests.conftest import PG_SKIP_REASON, postgres_url, reset_postgres


def stored(store: Store, tag: str, count: int) -> list[str]:
    """Notifications with the bench Lua script's marker in their body; their ids."""
    bodies = [b'{"bench":"%s-%d"}' % (tag.encode(), n) for n in range(count)]
    items = [Incoming("pucomex", None, "127.0.0.1", {}, b, dedup_key("pucomex", b)) for b in bodies]
    return [receipt.id for receipt in store.append_now(items)]


def answered(ids: list[str], ok: int | None = None) -> Load:
    """What wrk reports: ``ok`` 200s, whose ids the Lua script recorded."""
    ok = len(ids) if ok is None else ok
    return Load(len(ids), 1.0, ok, 1.0, 2.0, 3.0, 0, {"200": ok}, ids)


def test_every_answered_id_in_the_store_passes(tmp_path: Path, sqlite_store: Store) -> None:
    warm, run = stored(sqlite_store, "runw", 3), stored(sqlite_store, "run", 5)
    ids, ours = stored_ids_sqlite(tmp_path / "receiver.db", "run")
    text, ok = check_stored(answered(run), answered(warm), ids, ours, "run")
    assert ok, text
    assert ours == 5  # the warm-up's marker "runw-" is not this run's "run-"
    assert text.startswith("OK: 5 200s in the measured run, 5 of their ids found")


def test_a_200_missing_from_the_store_fails_the_run(tmp_path: Path, sqlite_store: Store) -> None:
    run = stored(sqlite_store, "run", 5)
    ids, ours = stored_ids_sqlite(tmp_path / "receiver.db", "run")
    lost = "01JZZZZZZZZZZZZZZZZZZZZZZZ"
    text, ok = check_stored(answered([*run, lost]), answered([]), ids, ours, "run")
    assert not ok
    assert "(1 missing)" in text
    # A warm-up 200 counts as much as a measured one.
    text, ok = check_stored(answered(run), answered([lost]), ids, ours, "run")
    assert not ok
    assert "warm-up 1 200s, 1 missing" in text


def test_200s_whose_ids_were_not_all_recorded_fail_the_run(
    tmp_path: Path, sqlite_store: Store
) -> None:
    # If the Lua script lost ids, the check by id would silently check fewer: it must fail.
    run = stored(sqlite_store, "run", 5)
    ids, ours = stored_ids_sqlite(tmp_path / "receiver.db", "run")
    text, ok = check_stored(answered(run[:4], ok=5), answered([]), ids, ours, "run")
    assert not ok, text


@pytest.mark.parametrize(
    ("sqlite_workers", "pg_workers", "expected"),
    [(1, None, [1]), (None, 2, [2]), (1, 2, [1, 2]), (2, 2, [2]), (None, None, [1])],
)
def test_the_bare_endpoint_runs_with_the_process_counts_the_targets_use(
    sqlite_workers: int | None, pg_workers: int | None, expected: list[int]
) -> None:
    assert bare_process_counts(sqlite_workers, pg_workers) == expected


def test_the_id_of_a_200_is_read_from_its_body_and_a_body_without_one_counts_as_missing() -> None:
    assert answer_id('{"id":"01KB2Z8Q3M7YV9X0D4E5F6G7H8","duplicate":false}') == (
        "01KB2Z8Q3M7YV9X0D4E5F6G7H8"
    )
    assert answer_id('{"error":"store unavailable"}') == ""
    assert not check_stored(answered([""]), answered([]), {"01KB2Z8Q3M7YV9X0D4E5F6G7H8"}, 1, "r")[1]


def burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_cpu_accounting_charges_each_role_what_it_spent() -> None:
    me = os.getpid()
    before = {me: cpu_seconds(me)}
    machine_before = machine_busy()
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    burn(0.3)
    # A child that burns CPU and is waited for stands for wrk: the load generator's share.
    subprocess.run([sys.executable, "-c", BURN_CHILD], check=True)

    use = cpu_use({me: "serving"}, before, machine_before, children_before, requests=1000)

    # 0.3 s over 1000 requests is 300 us each; the child's 0.2 s, 200 us each.
    assert 280 <= use.per_request_us["serving"] < 600
    assert 180 <= use.per_request_us["load generator"] < 400
    assert 0 < use.machine_busy <= 1
    assert "serving" in use.describe() and "load generator" in use.describe()


def test_the_cpu_ceiling_is_set_by_whatever_runs_out_first() -> None:
    # A receiver as measured on 2 cores: 160 + 113 + 36 = 309 us a request would fit 6,472 a
    # second in the cores, but one serving process at 160 us manages only 6,250.
    receiver = CpuUse({"serving": 160, "writers": 113, "load generator": 36}, 0.75, 0.05)
    assert receiver.ceiling(2, 1, 1).bound == "serving process"
    assert receiver.ceiling(2, 1, 1).rps == pytest.approx(6_250)
    # With two serving processes the cores run out first.
    assert receiver.ceiling(2, 2, 1).bound == "cores"
    assert receiver.ceiling(2, 2, 1).rps == pytest.approx(2e6 / 309)
    # A load generator that costs more than the server caps the run at its own threads.
    slow_generator = CpuUse({"serving": 50, "load generator": 100}, 0.9, 0.1)
    assert slow_generator.ceiling(8, 1, 1) == (10_000, "load generator")
    assert slow_generator.ceiling(8, 1, 4).bound == "serving process"


def test_a_process_that_is_gone_has_no_cpu_time() -> None:
    assert cpu_seconds(999_999_999) == 0.0


BURN_CHILD = """
import time
end = time.process_time() + 0.2
while time.process_time() < end:
    pass
"""


def test_the_peer_stores_what_it_acknowledges_and_refuses_a_wrong_token(tmp_path: Path) -> None:
    """The hand-written peer (d), as the bench runs it (a process of its own, a real socket):
    a 200 names a row the store check finds by id; a wrong token is a 401 and stores nothing."""
    import httpx

    from loadtests.bench.runs import BARE_COMMAND, bare_environment, free_port, stop, wait_ready
    from loadtests.bench.targets import PEER_APP, PEER_DATABASE_ENV

    database = tmp_path / "peer.db"
    port = free_port()
    env = bare_environment(
        {
            **os.environ,
            PEER_DATABASE_ENV: f"sqlite:///{database}",
            "BENCH_PUCOMEX_TOKEN": "right",
        }
    )
    command = [*BARE_COMMAND, "--serve-bare", str(port), "--serve-app", PEER_APP]
    proc = subprocess.Popen(command, env=env, cwd=tmp_path)
    try:
        wait_ready(port, proc)
        url = f"http://127.0.0.1:{port}/webhooks/pucomex"
        body = b'{"evento":"duimp.registro","bench":"peertest-01-1"}'
        with httpx.Client() as client:
            ok = client.post(url, content=body, headers={"authorization": "Bearer right"})
            refused = client.post(url, content=body, headers={"authorization": "Bearer wrong"})
    finally:
        stop(proc)
    assert ok.status_code == 200 and refused.status_code == 401
    ids, ours = stored_ids_sqlite(database, "peertest")
    assert ids == {answer_id(ok.text)} and ours == 1


@pytest.mark.postgres
def test_rows_per_commit_are_read_back_from_the_runs_rows(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = postgres_url()
    if url is None:
        pytest.skip(PG_SKIP_REASON)
    reset_postgres(url)
    store = Store(url)
    try:
        store.append_now(_marked("run", range(3)))  # one commit, one received_at for its rows
        store.append_now(_marked("run", range(3, 5)))
        store.append_now(_marked("other", range(4)))  # another run's rows are not counted
    finally:
        store.close()
    capsys.readouterr()
    ids, ours = stored_ids_postgres(url, "run")
    assert (len(ids), ours) == (9, 5)
    assert "rows per commit in the measured run: 2.5 (2 commits)" in capsys.readouterr().out


def _marked(tag: str, numbers: range) -> list[Incoming]:
    bodies = [b'{"bench":"%s-%d"}' % (tag.encode(), n) for n in numbers]
    return [Incoming("pucomex", None, "127.0.0.1", {}, b, dedup_key("pucomex", b)) for b in bodies]


def test_group_commit_settings_reach_the_receivers_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BENCH_PUCOMEX_TOKEN", "token")
    default = load_settings(write_config(tmp_path, "sqlite:///bench.db", "plain"))
    monkeypatch.setenv(GROUP_COMMIT_ENV, "{max_wait_ms: 1.5, max_batch: 64}")
    chosen = load_settings(write_config(tmp_path, "sqlite:///bench.db", "chosen"))
    assert (default.group_commit.max_wait_ms, default.group_commit.max_batch) == (0.0, 512)
    assert (chosen.group_commit.max_wait_ms, chosen.group_commit.max_batch) == (1.5, 64)
