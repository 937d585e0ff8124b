"""The seed's field rules, without HTTP: lengths 40/500, required fields, HTTPS only, ddMMyyyy."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from receiver.dispatcher.tables import AuthType
from receiver.dispatcher.validation import (
    DATA_PATTERN,
    ENDPOINT_PATTERN,
    EVENTO_PATTERN,
    OutboundAuth,
    brasilia_date,
    parse_auth,
    parse_data,
    parse_endpoint,
    parse_evento,
    parse_id,
    parse_json_object,
    parse_subscription,
)
from receiver.errors import InvalidField

OK = {"evento": "duimp.registro", "endpoint": "https://sefaz.example.gov.br/webhook"}


def refused(call: Any, *args: Any, **kwargs: Any) -> InvalidField:
    with pytest.raises(InvalidField) as caught:
        call(*args, **kwargs)
    return caught.value


def test_a_valid_subscription_is_read_field_by_field() -> None:
    data = parse_subscription(dict(OK))
    assert (data.evento, data.endpoint, data.auth) == (OK["evento"], OK["endpoint"], None)


@pytest.mark.parametrize("missing", ["evento", "endpoint"])
def test_required_fields(missing: str) -> None:
    body = {key: value for key, value in OK.items() if key != missing}
    error = refused(parse_subscription, body)
    assert error.field == missing
    assert "required" in str(error)
    assert error.status == 422


def test_evento_is_text_of_at_most_40() -> None:
    assert parse_evento("e" * 40) == "e" * 40
    assert refused(parse_evento, "e" * 41).field == "evento"
    assert refused(parse_evento, "").field == "evento"
    assert refused(parse_evento, 12).field == "evento"
    assert refused(parse_evento, "duimp registro").field == "evento"


def test_endpoint_is_text_of_at_most_500() -> None:
    base = "https://sefaz.example/"
    exactly = base + "p" * (500 - len(base))
    assert parse_endpoint(exactly) == exactly
    error = refused(parse_endpoint, exactly + "p")
    assert error.field == "endpoint"
    assert "500" in str(error)


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://sefaz.example/webhook",
        "ftp://sefaz.example/webhook",
        "//sefaz.example/webhook",
        "sefaz.example/webhook",
        "https:/sefaz.example",
        "wss://sefaz.example",
    ],
)
def test_endpoint_must_be_https(endpoint: str) -> None:
    error = refused(parse_endpoint, endpoint)
    assert error.field == "endpoint"
    assert "https" in str(error).lower()


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://",
        "https://user:secret@sefaz.example/",
        "https://sefaz.example/a b",
        "https://sefaz.example/#fragment",
        "https://sefaz.example:0/",
        "https://sefaz.example:65536/",
        "https://sefaz.example/\n",
        "https://-bad-.example/",
    ],
)
def test_endpoint_shape(endpoint: str) -> None:
    assert refused(parse_endpoint, endpoint).field == "endpoint"


@pytest.mark.parametrize(
    "endpoint",
    [
        "HTTPS://Sefaz.Example/Webhook",
        "https://sefaz.example:8443/api/hook?tenant=sp",
        "https://127.0.0.1:65535/",
        "https://[::1]:8443/hook",
    ],
)
def test_endpoint_accepted(endpoint: str) -> None:
    assert parse_endpoint(endpoint) == endpoint


def test_the_published_patterns_are_the_enforced_rules() -> None:
    # The OpenAPI document publishes these patterns; the app must accept exactly what they allow.
    @given(st.from_regex(ENDPOINT_PATTERN, fullmatch=True).filter(lambda s: len(s) <= 500))
    def endpoints(value: str) -> None:
        assert parse_endpoint(value) == value

    @given(st.from_regex(EVENTO_PATTERN, fullmatch=True).filter(lambda s: len(s) <= 40))
    def eventos(value: str) -> None:
        assert parse_evento(value) == value

    @given(st.text(max_size=60))
    def any_text(value: str) -> None:
        accepted = True
        try:
            parse_endpoint(value)
        except InvalidField:
            accepted = False
        assert accepted == (re.fullmatch(ENDPOINT_PATTERN, value) is not None)

    endpoints()
    eventos()
    any_text()


def test_unknown_fields_are_named() -> None:
    error = refused(parse_subscription, {**OK, "endPoint": "https://x.example"})
    assert error.field == "endPoint"


def test_change_repeats_the_id_of_the_path() -> None:
    assert parse_subscription({**OK, "id": 8}, path_id=8).evento == OK["evento"]
    missing = refused(parse_subscription, dict(OK), path_id=8)
    assert (missing.field, missing.status) == ("id", 422)
    different = refused(parse_subscription, {**OK, "id": 9}, path_id=8)
    assert (different.field, different.status) == ("id", 409)
    # A creation has no id to give.
    assert refused(parse_subscription, {**OK, "id": 8}).field == "id"


@pytest.mark.parametrize(
    "raw", [0, -1, 10_000_000_000, "abc", "1.5", 1.5, True, None, "01234567890"]
)
def test_id_is_number_10(raw: Any) -> None:
    assert refused(parse_id, raw).field == "id"


def test_id_accepts_10_digits() -> None:
    assert parse_id("9999999999") == 9_999_999_999
    assert parse_id(8) == 8
    assert parse_id(8.0) == 8


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("17092018", "17092018"),
        (17092018, "17092018"),
        (1092018, "01092018"),
        ("29022024", "29022024"),
    ],
)
def test_data_is_ddmmyyyy(raw: Any, expected: str) -> None:
    assert parse_data(raw) == expected


@pytest.mark.parametrize(
    "raw", ["2018-09-17", "1709201", "170920181", "32012024", "29022023", "17132018", "", True, 1.0]
)
def test_data_refused(raw: Any) -> None:
    error = refused(parse_data, raw)
    assert error.field == "data"
    assert "ddMMyyyy" in str(error)


@given(st.from_regex(r"[0-9]{8}", fullmatch=True))
def test_the_published_date_pattern_is_the_calendar(raw: str) -> None:
    from datetime import date

    try:
        date(int(raw[4:]), int(raw[2:4]), int(raw[:2]))
        real = True
    except ValueError:
        real = False
    assert (re.fullmatch(DATA_PATTERN, raw) is not None) == real


@pytest.mark.parametrize("raw", ["29022000", "29022024", "28021900", "31122099", "01010001"])
def test_calendar_edges_accepted(raw: str) -> None:
    assert parse_data(raw) == raw


@pytest.mark.parametrize("raw", ["29021900", "29022100", "31042024", "30022024", "01010000"])
def test_calendar_edges_refused(raw: str) -> None:
    assert refused(parse_data, raw).field == "data"


def test_brasilia_date_is_three_hours_behind_utc() -> None:
    from datetime import UTC, datetime

    assert brasilia_date(datetime(2026, 11, 23, 2, 59, tzinfo=UTC)) == "22112026"
    assert brasilia_date(datetime(2026, 11, 23, 3, 0, tzinfo=UTC)) == "23112026"


def test_outbound_credentials() -> None:
    assert parse_auth({"tipo": "none"}) == OutboundAuth()
    basic = parse_auth({"tipo": "basic", "usuario": "ons", "senha": "s3nha"})
    assert basic.type is AuthType.BASIC
    assert basic.header() == "Basic b25zOnMzbmhh"
    bearer = parse_auth({"tipo": "bearer", "token": "abc.DEF-123"})
    assert bearer.header() == "Bearer abc.DEF-123"
    assert OutboundAuth().header() is None
    # Basic travels base64-encoded: line breaks in a password cannot split the header.
    odd = parse_auth({"tipo": "basic", "usuario": "ons", "senha": "a\r\nX-Injected: 1"})
    assert "\n" not in (odd.header() or "")


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"tipo": "digest"}, "autenticacao.tipo"),
        ("basic", "autenticacao"),
        ({"tipo": "basic", "senha": "x"}, "autenticacao.usuario"),
        ({"tipo": "basic", "usuario": "a:b", "senha": "x"}, "autenticacao.usuario"),
        ({"tipo": "basic", "usuario": "ons"}, "autenticacao.senha"),
        ({"tipo": "basic", "usuario": "ons", "senha": "a\ud800"}, "autenticacao.senha"),
        ({"tipo": "bearer"}, "autenticacao.token"),
        ({"tipo": "bearer", "token": "has space"}, "autenticacao.token"),
        ({"tipo": "bearer", "token": "x\r\nHost: evil"}, "autenticacao.token"),
        ({"tipo": "none", "token": "x"}, "autenticacao.token"),
    ],
)
def test_outbound_credentials_refused(raw: Any, field: str) -> None:
    assert refused(parse_auth, raw).field == field


@pytest.mark.parametrize("body", [b"", b"not json", b"[1,2]", b'"text"', b"[" * 100_000])
def test_unreadable_bodies_are_400(body: bytes) -> None:
    error = refused(parse_json_object, body)
    assert (error.field, error.status) == ("body", 400)


def test_an_empty_body_is_allowed_where_optional() -> None:
    assert parse_json_object(b"  ", optional=True) == {}
