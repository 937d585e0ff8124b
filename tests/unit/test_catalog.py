"""The event catalog: published and provisional ids, aliases, and `receiver events`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from receiver.catalog import CATALOGS, EventStatus, catalog_rows, is_known_event
from receiver.runtime.cli import main

PUBLISHED = {
    "dimp-diag-import",
    "dimp-registro-import",
    "dimp-retifica-import",
    "dimp-situacao-import",
    "cctr-resultado-recepcao",
    "cctr-carga-liberada",
    "cctr-carga-bloqueio",
    "cctr-canal-vermelho",
    "talp-altsit-lpco-anu",
    "talp-inclusao-exig",
    "talp-cancela-exig",
    "duex-historico",
    "catp-prod-desativado",
}


def test_the_portals_published_ids_are_in_the_catalog_as_published() -> None:
    pucomex = CATALOGS["pucomex"]
    assert {i for i, e in pucomex.items() if e.status is EventStatus.PUBLISHED} == PUBLISHED
    assert all(is_known_event("pucomex", event) for event in PUBLISHED)


def test_the_sefaz_events_keep_their_provisional_ids() -> None:
    provisional = {i for i, e in CATALOGS["pucomex"].items() if e.status == "provisional"}
    assert {"duimp.registro", "duimp.desembaraco", "pcce.icms-solicitacao"} <= provisional
    assert len([e for e in provisional if e.startswith("lpco.")]) == 12
    assert not provisional & PUBLISHED


def test_rows_include_aliases_after_the_catalog() -> None:
    rows = list(catalog_rows({"pucomex": {"sefaz-registro": "duimp.registro"}}, "pucomex"))
    assert rows[-1].public() == {
        "source": "pucomex",
        "id": "sefaz-registro",
        "status": "alias",
        "alias_of": "duimp.registro",
        "description": "Registro de Duimp",
        "reference": "receiver.yaml events.aliases",
    }
    assert {row.source for row in rows} == {"pucomex"}


def test_receiver_events_prints_the_catalog_with_the_configured_aliases(tmp_path: Path) -> None:
    config = tmp_path / "receiver.yaml"
    config.write_text("events:\n  aliases:\n    pucomex: {sefaz-registro: duimp.registro}\n")
    runner = CliRunner()
    shown = runner.invoke(main, ["events", "--config", str(config), "--source", "pucomex"])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[0].split()[:3] == ["pucomex", "dimp-diag-import", "published"]
    assert "sefaz-registro -> duimp.registro" in lines[-1]
    as_json = runner.invoke(main, ["events", "--config", str(config), "--json"])
    rows = [json.loads(line) for line in as_json.output.splitlines()]
    assert {row["source"] for row in rows} == {"pucomex", "sintegre", "invoicy"}
    assert {"dimp-registro-import", "produto.publicado", "nfe.documento-autorizado"} <= {
        row["id"] for row in rows
    }


@pytest.mark.parametrize("source", ["erp", "nada"])
def test_receiver_events_for_an_unknown_source_says_so(source: str) -> None:
    shown = CliRunner().invoke(main, ["events", "--source", source])
    assert shown.exit_code == 2
    assert f"no catalog or alias for source '{source}'" in shown.output
