"""The payload models: which event gets which, what each requires, how errors read."""

from __future__ import annotations

import pytest

from receiver.catalog import CATALOGS
from receiver.payloads import (
    DuimpEvent,
    InvoicyNotification,
    PortalEvent,
    SefazEvent,
    SintegreProduct,
    ValidationError,
    describe,
    model_for,
    validate_payload,
)


@pytest.mark.parametrize(
    ("source", "event", "model"),
    [
        ("pucomex", "dimp-registro-import", DuimpEvent),
        ("pucomex", "dimp-situacao-import", DuimpEvent),
        ("pucomex", "duimp.desembaraco", DuimpEvent),
        ("pucomex", "pcce.icms-solicitacao", SefazEvent),
        ("pucomex", "lpco.registro", SefazEvent),
        ("pucomex", "cctr-carga-liberada", PortalEvent),
        ("pucomex", "not-in-the-catalog", PortalEvent),
        ("sintegre", "produto.publicado", SintegreProduct),
        ("invoicy", "nfe.documento-autorizado", InvoicyNotification),
    ],
)
def test_each_event_has_its_model(source: str, event: str, model: type) -> None:
    assert model_for(source, event) is model


def test_every_catalog_event_has_a_model_and_other_sources_none() -> None:
    for source, catalog in CATALOGS.items():
        for event in catalog:
            assert model_for(source, event) is not None, (source, event)
    assert model_for("erp", "anything") is None
    assert validate_payload("erp", "anything", {"x": 1}) is None


def test_a_duimp_event_keeps_what_the_portal_adds_and_reads_versao_as_a_number() -> None:
    event = DuimpEvent.model_validate(
        {"identificacao": {"numero": "26BR1", "versao": "2"}, "canal": "VERDE", "novo": 1}
    )
    assert event.identificacao.versao == 2
    assert event.model_extra == {"novo": 1}
    assert DuimpEvent.model_validate({"identificacao": {"numero": 7, "versao": ""}}).identificacao
    assert DuimpEvent.model_validate({"identificacao": {"numero": 7}}).identificacao.numero == "7"


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ({}, "identificacao: Field required"),
        ({"identificacao": {"numero": ""}}, "identificacao.numero: String should have at least 1"),
        ({"identificacao": {"numero": "1", "versao": 1.5}}, "identificacao.versao: Input should"),
        ({"identificacao": "26BR1"}, "identificacao: Input should be a valid dictionary"),
        ({"dados": {}}, "identificacao.numero: Field required"),
    ],
)
def test_a_duimp_event_that_does_not_fit_says_where(payload: object, problem: str) -> None:
    with pytest.raises(ValidationError) as caught:
        DuimpEvent.model_validate(payload)
    reason = describe(caught.value)
    assert reason.startswith("does not fit DuimpEvent: ")
    assert problem in reason


def test_sintegre_fields_in_any_case_and_uri_or_url() -> None:
    product = SintegreProduct.model_validate({"NOME": "IPDO", "uri": "https://x/a.zip"})
    assert (product.Nome, product.uri) == ("IPDO", "https://x/a.zip")
    assert SintegreProduct.model_validate({"Nome": "a", "Url": "https://x/b"}).uri == "https://x/b"
    with pytest.raises(ValidationError, match="without Uri"):
        SintegreProduct.model_validate({"Nome": "IPDO"})


def test_invoicy_codes_as_text_or_numbers_and_the_document_fields_kept() -> None:
    note = InvoicyNotification.model_validate(
        {"Modulo": "1", "TipoNotificacao": 7, "ChaveAcesso": "352611"}
    )
    assert (note.Modulo, note.TipoNotificacao) == (1, 7)
    assert note.model_dump()["ChaveAcesso"] == "352611"
