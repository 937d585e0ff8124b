"""Source profiles: event ids from bodies, catalogs, and strict JSON that quarantines, never crashes."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from receiver.errors import ParseError
from receiver.sources import (
    INVOICY_EVENTS,
    PARSERS,
    PUCOMEX_EVENTS,
    Parsed,
    dedup_key,
    is_known_event,
    parse,
    parse_generic,
    parse_invoicy,
)


def test_pucomex_event_from_path_then_body() -> None:
    body = json.dumps({"evento": "duimp.registro", "dados": {"numero": "1"}}).encode()
    assert parse("pucomex", body, None).event == "duimp.registro"
    assert parse("pucomex", body, "duimp.retificacao").event == "duimp.retificacao"
    assert parse("pucomex", body, None).payload["dados"] == {"numero": "1"}


def test_catalog_holds_seed_events() -> None:
    assert len([e for e in PUCOMEX_EVENTS if e.startswith("lpco.")]) == 12
    assert {
        "duimp.registro",
        "duimp.desembaraco",
        "pcce.icms-solicitacao",
        "anexacao.documentos-disponiveis",
    } <= set(PUCOMEX_EVENTS)
    assert is_known_event("pucomex", "duimp.registro") is True
    assert is_known_event("pucomex", "duimp.nada") is False
    assert is_known_event("custom", "anything") is None


def test_sintegre_product_published() -> None:
    body = json.dumps(
        {
            "Nome": "IPDO",
            "Processo": "Operação",
            "MacroProcesso": "Programação",
            "DataProduto": "2020-08-01",
            "Periodicidade": "2020-08-01T00:00:00",
            "PeriodicidadeFinal": "2020-08-31T23:59:59",
            "Uri": "https://sintegre.ons.org.br/f.zip",
        }
    ).encode()
    parsed = parse("sintegre", body, None)
    assert parsed.event == "produto.publicado"
    with pytest.raises(ParseError, match="without Uri"):
        parse("sintegre", b'{"Nome": "IPDO"}', None)


@pytest.mark.parametrize(
    ("payload", "event"),
    [
        ({"Modulo": 1, "TipoNotificacao": 7}, "nfe.documento-autorizado"),
        ({"modulo": "2", "tipoNotificacao": "6"}, "nfce.documento-inutilizado"),
        ({"Modulo": 14, "TipoNotificacao": 8}, "certificado.certificado-vencimento"),
        ({"Modulo": 12, "TipoNotificacao": 1}, "gnre.documento-emitido"),
    ],
)
def test_invoicy_codes_map_to_readable_ids(payload: dict[str, object], event: str) -> None:
    assert parse("invoicy", json.dumps(payload).encode(), None).event == event
    assert event in INVOICY_EVENTS


@pytest.mark.parametrize(
    "payload",
    [{"Modulo": 3, "TipoNotificacao": 1}, {"Modulo": 1}, {"Modulo": True, "TipoNotificacao": 1}],
)
def test_invoicy_unknown_codes_quarantine(payload: dict[str, object]) -> None:
    with pytest.raises(ParseError):
        parse("invoicy", json.dumps(payload).encode(), None)


def test_generic_source_reads_common_fields() -> None:
    assert parse("erp", b'{"type": "order.paid"}', None).event == "order.paid"
    with pytest.raises(ParseError):
        parse("erp", b"[1, 2]", None)


def test_dedup_key_depends_on_source_and_body_only() -> None:
    assert dedup_key("pucomex", b"a") == dedup_key("pucomex", b"a")
    assert dedup_key("pucomex", b"a") != dedup_key("sintegre", b"a")
    assert dedup_key("pucomex", b"a") != dedup_key("pucomex", b"b")


# Values a sender could put where a parser looks: codes as Unicode digits ("²", "٣") and as more
# digits than int() converts, events of every kind, and the rest of JSON.
_CODES = st.one_of(
    st.integers(),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.from_regex(r"\s*[0-9\u00b2\u00b3\u00b9\u0660-\u0669\u07c0-\u07c9]{1,12}\s*", fullmatch=True),
    st.integers(min_value=4_301, max_value=6_000).map(lambda n: "7" * n),
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children),
    max_leaves=8,
)
_FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "evento": st.text(max_size=140) | _JSON,
        "event": st.text(max_size=140) | _JSON,
        "type": st.text(max_size=140) | _JSON,
        "Modulo": _CODES,
        "TipoNotificacao": _CODES,
        "Nome": _JSON,
        "Uri": _JSON,
    },
)
BODIES = st.one_of(
    st.binary(max_size=300),
    _FIELDS.map(lambda fields: json.dumps(fields).encode()),
    _JSON.map(lambda value: json.dumps(value).encode()),
)


@given(BODIES, st.none() | st.text(max_size=130))
def test_every_parser_failure_is_a_parse_error(body: bytes, path_event: str | None) -> None:
    """Each source's parser on its own (not through ``parse``, which would turn a stray exception
    into a ParseError): what it cannot read is a ParseError with a reason, and what it reads has
    an event."""
    for parser in (*PARSERS.values(), parse_generic):
        try:
            parsed = parser(body, path_event)
        except ParseError as error:
            assert str(error)
        else:
            assert isinstance(parsed.event, str) and parsed.event


@pytest.mark.parametrize(
    "code", ["\u00b2", "\u0663", "7" * 5_000, " 1 ²", "-1", "+1", "1_0", "0x1"]
)
def test_invoicy_codes_int_cannot_read_quarantine(code: str) -> None:
    body = json.dumps({"Modulo": code, "TipoNotificacao": "1"}).encode()
    with pytest.raises(ParseError, match="unknown InvoiCy module None"):
        parse_invoicy(body, None)


def test_an_unforeseen_parser_error_is_a_parse_error_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(body: bytes, path_event: str | None) -> Parsed:
        raise KeyError("nobody saw this coming")

    monkeypatch.setitem(PARSERS, "pucomex", broken)
    with pytest.raises(ParseError, match="KeyError: 'nobody saw this coming'"):
        parse("pucomex", b"{}", None)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(st.text(max_size=5), children, max_size=3)
        ),
        max_leaves=20,
    )
)
def test_json_values_round_trip_through_generic_parse(value: object) -> None:
    body = json.dumps({"evento": "x.y", "dados": value}).encode()
    assert parse("pucomex", body, None).payload["dados"] == value


PRODUCTION_DUIMP = {
    "identificacao": {"numero": "26BR00000000198", "versao": 2},
    "situacaoDuimp": "DESEMBARACADA_AGUARDANDO_ENTREGA_CARGA",
    "canal": "VERDE",
    "dataEvento": "2026-11-30T10:15:00-03:00",
    "message": "Duimp 26BR00000000198 desembaraçada",
}


def test_pucomex_production_body_is_read_with_the_stored_event() -> None:
    body = json.dumps(PRODUCTION_DUIMP).encode()
    parsed = parse("pucomex", body, "dimp-situacao-import")
    assert parsed.event == "dimp-situacao-import"
    assert parsed.payload["identificacao"]["numero"] == "26BR00000000198"


def test_pucomex_production_body_without_event_quarantines_clearly() -> None:
    with pytest.raises(ParseError, match="no event-type header with an event id"):
        parse("pucomex", json.dumps(PRODUCTION_DUIMP).encode(), None)


@pytest.mark.parametrize("field", ["Uri", "Url", "uri", "URL", "url"])
def test_sintegre_takes_uri_or_url_in_any_case(field: str) -> None:
    body = json.dumps({"nome": "IPDO", field: "https://sintegre.ons.org.br/f.zip"}).encode()
    assert parse("sintegre", body, None).event == "produto.publicado"


def test_sintegre_without_either_link_quarantines() -> None:
    with pytest.raises(ParseError, match=r"without Uri \(or Url\)"):
        parse("sintegre", b'{"Nome": "IPDO", "Link": "https://x"}', None)


@pytest.mark.parametrize("field", ["Uri", "Url", "URL", "uri"])
def test_the_sintegre_handler_downloads_from_uri_or_url(field: str) -> None:
    from handlers.sintegre import product_uri

    assert product_uri({"Nome": "IPDO", field: "https://x.ons/f.zip"}) == "https://x.ons/f.zip"


def test_the_sintegre_handler_without_a_link_says_which_names_it_reads() -> None:
    from handlers.sintegre import product_uri

    with pytest.raises(ValueError, match=r"Uri \(or Url\)"):
        product_uri({"Nome": "IPDO", "Link": "https://x.ons/f.zip"})
