"""The simulator's Duimps: the reference consultation shape exactly, realistic, deterministic."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from receiver.simulator import duimps
from tests.conftest import FIXTURES

# A copy of shared/reference/duimp-consulta-response.example.json: the field shape of the Portal's
# Duimp consultation, from samuelfac/portalunico.siscomex.gov.br (MIT licence).
REFERENCE = FIXTURES / "duimp-consulta-response.example.json"


def shape_errors(reference: Any, value: Any, path: str = "$") -> list[str]:
    """Where ``value`` differs from the reference's keys, nesting and JSON types."""
    if isinstance(reference, dict):
        if not isinstance(value, dict):
            return [f"{path}: expected an object"]
        errors = [f"{path}: keys differ: {sorted(set(reference) ^ set(value))}"] * (
            set(reference) != set(value)
        )
        for key in reference.keys() & value.keys():
            errors += shape_errors(reference[key], value[key], f"{path}.{key}")
        return errors
    if isinstance(reference, list):
        if not isinstance(value, list) or not value:
            return [f"{path}: expected a non-empty array"]
        return [
            e
            for i, item in enumerate(value)
            for e in shape_errors(reference[0], item, f"{path}[{i}]")
        ]
    if isinstance(reference, str):
        return [] if isinstance(value, str) else [f"{path}: expected a string, got {value!r}"]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return [f"{path}: expected a number, got {value!r}"]
    return []


@pytest.fixture(scope="module")
def reference() -> Any:
    return json.loads(REFERENCE.read_text(encoding="utf-8"))


def test_the_helper_sees_a_difference(reference: Any) -> None:
    broken = duimps.duimp("24BR0000012345")
    assert broken is not None
    broken["dadosCarga"]["pesoLiquido"] = "12"
    del broken["itens"][0]["dadosProduto"]["codigoNCM"]
    assert len(shape_errors(reference, broken)) == 2


@pytest.mark.parametrize("sequence", range(1, 400, 7))
def test_every_duimp_has_the_reference_shape(reference: Any, sequence: int) -> None:
    numero = duimps.duimp_number(sequence * 104_729)
    for versao in (None, 1, 3):
        found = duimps.duimp(numero, versao)
        assert found is not None
        assert shape_errors(reference, json.loads(json.dumps(found))) == []


def test_same_number_same_duimp_and_versions_differ() -> None:
    numero = "24BR0000012345"
    assert duimps.duimp(numero, 1) == duimps.duimp(numero, 1)
    first, second = duimps.duimp(numero, 1), duimps.duimp(numero, 2)
    assert first is not None and second is not None
    assert first["versaoDeclaracao"] == "1" and second["versaoDeclaracao"] == "2"
    assert second["situacaoDeclaracao"] == "RETIFICADA"
    assert first["niImportador"] == second["niImportador"]
    assert [e["evento"] for e in second["itensHistorico"]][-1] == "RETIFICACAO"
    assert duimps.duimp(numero)["versaoDeclaracao"] == str(duimps.latest_version(numero))  # type: ignore[index]


def test_numbers_and_versions_out_of_range() -> None:
    assert duimps.duimp_number(12345) == "24BR0000012345"
    assert duimps.duimp("24BR000001234") is None
    assert duimps.duimp("../etc/passwd") is None
    assert duimps.duimp("24BR0000012345", 0) is None
    assert duimps.duimp("24BR0000012345", duimps.MAX_VERSION + 1) is None


def _cnpj_ok(cnpj: str) -> bool:
    digits = [int(c) for c in cnpj]
    for size in (12, 13):
        weights = list(range(size - 7, 1, -1)) + list(range(9, 1, -1))
        total = sum(d * w for d, w in zip(digits[:size], weights, strict=True)) % 11
        if digits[size] != (0 if total < 2 else 11 - total):
            return False
    return True


def test_values_are_realistic() -> None:
    for sequence in range(1, 60):
        found = duimps.duimp(duimps.duimp_number(sequence))
        assert found is not None
        cnpj = str(found["niImportador"])
        assert len(cnpj) == 14 and _cnpj_ok(cnpj)
        assert found["canalSelecao"] in (1, 2, 3, 4)
        assert re.fullmatch(r"\d{11}", found["cpfResponsavel"])
        for item in found["itens"]:
            assert re.fullmatch(r"\d{8}", item["dadosProduto"]["codigoNCM"])
            calcs = item["itemTributo"]["calculosTributos"]
            assert {c["imposto"]["descricao"] for c in calcs} >= {"II", "IPI"}
            for calc in calcs:
                expected = round(calc["valorBaseCalculo"] * calc["valorAliquota"] / 100, 2)
                assert calc["valorDevido"] == expected
        totals = {
            t["imposto"]["codigo"]: t["valorDevido"]
            for t in found["dadosTributos"]["tributosCalculados"]
        }
        ii = sum(i["itemTributo"]["calculosTributos"][0]["valorDevido"] for i in found["itens"])
        assert totals["1"] == pytest.approx(ii, abs=0.01)
        assert found["dataHoraRegistro"] > found["dataHoraCriacao"]


@pytest.mark.parametrize("numero", ["24BR0000012345\n", "24BR0000012345 ", "\n24BR0000012345"])
def test_a_duimp_number_is_matched_whole(numero: str) -> None:
    assert duimps.is_duimp_number(numero.strip())
    assert not duimps.is_duimp_number(numero)  # "$" alone let the trailing newline through
