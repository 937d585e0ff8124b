"""``receiver portal ...`` as a user runs it, with the network replaced by a fake of the seed's
subscription API (the dispatcher's real one is built elsewhere)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from receiver.runtime.cli import main
from receiver.store import NoteFilter, Store
from tests.conftest import upgraded_database
from tests.integration.portal.support import FakePortal

HOOK = "https://receiver.example.com.br/webhooks/pucomex"
DAY = "17092018"


def write_config(tmp_path: Path, subscriptions: list[dict[str, str]]) -> Path:
    config = tmp_path / "receiver.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "database_url": f"sqlite:///{tmp_path / 'r.db'}",
                "portal": {"base_url": "https://portal.test", "max_retries": 0},
                "subscriptions": subscriptions,
            }
        )
    )
    return config


def invoke(portal: FakePortal, config: Path, *args: str) -> Result:
    return CliRunner().invoke(
        main, ["portal", *args, "--config", str(config)], obj={"transport": portal.transport()}
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(
        tmp_path,
        [
            {"evento": "duimp.registro", "endpoint": HOOK},
            {"evento": "duimp.retificacao", "endpoint": HOOK},
        ],
    )


def test_sync_shows_the_plan_then_applies_it(config: Path) -> None:
    portal = FakePortal()
    portal.add_subscription("duimp.registro", HOOK)
    portal.add_subscription("lpco.registro", HOOK)

    dry = invoke(portal, config, "subscriptions", "sync", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "create  duimp.retificacao" in dry.output and "delete  #2 lpco.registro" in dry.output
    assert "keep    #1 duimp.registro" in dry.output and "nothing changed" in dry.output
    assert len(portal.subscriptions) == 2 and not portal.calls("POST", "/portal/api/ext/webhook")

    applied = invoke(portal, config, "subscriptions", "sync")
    assert applied.exit_code == 0, applied.output
    assert "1 created, 0 updated, 1 deleted" in applied.output
    assert sorted((s["evento"], s["endpoint"]) for s in portal.subscriptions.values()) == [
        ("duimp.registro", HOOK),
        ("duimp.retificacao", HOOK),
    ]
    again = invoke(portal, config, "subscriptions", "sync")
    assert again.exit_code == 0 and "already in sync" in again.output


def test_add_list_update_remove(config: Path) -> None:
    portal = FakePortal()
    added = invoke(portal, config, "subscriptions", "add", "duimp.desembaraco", HOOK)
    assert added.exit_code == 0 and "created #1" in added.output
    listed = invoke(portal, config, "subscriptions", "list")
    assert "duimp.desembaraco" in listed.output and HOOK in listed.output
    updated = invoke(portal, config, "subscriptions", "update", "1", "duimp.cancelamento", HOOK)
    assert updated.exit_code == 0 and portal.subscriptions[1]["evento"] == "duimp.cancelamento"
    removed = invoke(portal, config, "subscriptions", "remove", "1")
    assert removed.exit_code == 0 and portal.subscriptions == {}
    missing = invoke(portal, config, "subscriptions", "remove", "1")
    assert missing.exit_code == 1 and "404" in missing.output


def test_an_http_endpoint_is_refused_before_sending(config: Path) -> None:
    portal = FakePortal()
    result = invoke(portal, config, "subscriptions", "add", "duimp.registro", "http://x.br/h")
    assert result.exit_code == 1 and "secure URL (https://)" in result.output
    assert portal.requests == []


def test_without_a_portal_section_the_error_says_so(tmp_path: Path) -> None:
    config = tmp_path / "receiver.yaml"
    config.write_text("log_level: INFO\n")
    result = invoke(FakePortal(), config, "subscriptions", "list")
    assert result.exit_code == 2
    assert f"{config}: portal: no such section" in result.output  # the file, then the key


def test_recover_prints_the_report_and_stores(config: Path, tmp_path: Path) -> None:
    upgraded_database(f"sqlite:///{tmp_path / 'r.db'}")  # `receiver db upgrade` was run
    portal = FakePortal()
    content = json.dumps(
        {"evento": "duimp.registro", "dados": {"numero": "18BR0000000001", "versao": 1}}
    )
    for record_id in (1, 2, 3):
        portal.failures.append(
            {
                "id": record_id,
                "data": DAY,
                "descricao": "timeout",
                "evento": "duimp.registro",
                "conteudo": content,
            }
        )
    first = invoke(portal, config, "recover", "--date", DAY)
    assert first.exit_code == 0, first.output
    assert (
        "3 failure records, 1 distinct notifications, 0 already stored, 1 recovered" in first.output
    )
    second = invoke(portal, config, "recover", "--date", DAY)
    assert "1 already stored, 0 recovered" in second.output
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        (row,) = list(store.notes(NoteFilter()))
        assert row["recovered"] and bytes(row["body"]).decode() == content
    finally:
        store.close()
    bad = invoke(portal, config, "recover", "--date", "2018-09-17")
    assert bad.exit_code == 1 and "ddMMyyyy" in bad.output


def test_the_portal_group_imports_in_either_order() -> None:
    code = (
        "import click, receiver.runtime.cli.portal, receiver.runtime.cli; "
        "main = receiver.runtime.cli.main; "
        "group = main.get_command(click.Context(main), 'portal'); "
        "assert group is receiver.runtime.cli.portal.portal"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


CHAVE = "0484a6e22cf66a2d3da8953789f8c6b3"


def with_chave(config: Path) -> Path:
    raw = yaml.safe_load(config.read_text())
    raw["portal"]["chave_secreta"] = "env:TEST_CHAVE_SECRETA"
    config.write_text(yaml.safe_dump(raw))
    return config


def test_add_update_and_sync_send_the_chave_secreta_and_never_print_it(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_CHAVE_SECRETA", CHAVE)
    with_chave(config)
    portal = FakePortal()
    outputs = [
        invoke(portal, config, "subscriptions", "add", "dimp-registro-import", HOOK),
        invoke(portal, config, "subscriptions", "update", "1", "dimp-retifica-import", HOOK),
        invoke(portal, config, "subscriptions", "sync", "--resend-secret"),
    ]
    assert [o.exit_code for o in outputs] == [0, 0, 0], outputs[-1].output
    sent = [
        json.loads(r.content)
        for r in portal.requests
        if r.method in ("POST", "PUT") and r.url.path.startswith("/portal/api/ext/webhook")
    ]
    assert len(sent) >= 4 and all(body["chaveSecreta"] == CHAVE for body in sent)
    assert all(CHAVE not in o.output for o in outputs)
    assert "note: portal.chave_secreta is not set" not in outputs[0].output


def test_without_a_chave_secreta_add_says_what_that_means(config: Path) -> None:
    added = invoke(FakePortal(), config, "subscriptions", "add", "dimp-registro-import", HOOK)
    assert added.exit_code == 0
    assert "portal.chave_secreta is not set" in added.output


def test_list_inactive_shows_the_reason_and_sync_creates_it_again(config: Path) -> None:
    portal = FakePortal()
    portal.add_subscription("duimp.registro", HOOK)
    portal.add_subscription("duimp.retificacao", HOOK)
    portal.cancel(2, "Cancelada automaticamente: apenas erros na entrega por 30 dias")

    plain = invoke(portal, config, "subscriptions", "list")
    assert "duimp.retificacao" not in plain.output
    listed = invoke(portal, config, "subscriptions", "list", "--inactive")
    assert listed.exit_code == 0, listed.output
    assert (
        "INACTIVE: Cancelada automaticamente: apenas erros na entrega por 30 dias" in listed.output
    )
    assert "1 cancelled by the Portal" in listed.output
    assert portal.calls("GET", "/portal/api/ext/webhook")[-1].url.params["exibirInativos"] == "true"

    synced = invoke(portal, config, "subscriptions", "sync")
    assert synced.exit_code == 0, synced.output
    assert "(again: the Portal cancelled #2: Cancelada automaticamente" in synced.output
    assert "1 re-created after the Portal cancelled them" in synced.output
    active = sorted((s["evento"], s["endpoint"]) for s in portal.subscriptions.values())
    assert active == [("duimp.registro", HOOK), ("duimp.retificacao", HOOK)]
    assert "already in sync" in invoke(portal, config, "subscriptions", "sync").output
