"""Credentials: Basic and Bearer, rotation, and every malformed header a 401 (never a 500)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from receiver.auth import MAX_AUTHORIZATION_BYTES, Verifier, basic_header
from receiver.config import BasicCredential, BearerCredential, Credential, HeaderCredential

CREDENTIALS: list[Credential] = [
    BearerCredential(type="bearer", token="new-token-1234567890"),
    BearerCredential(type="bearer", token="old-token-0987654321"),
    BasicCredential(type="basic", username="ons", password="senha-forte"),
]
VERIFIER = Verifier(CREDENTIALS, realm="sintegre")


def b64(raw: bytes) -> bytes:
    return base64.b64encode(raw)


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        (b"Bearer new-token-1234567890", True),
        (b"Bearer old-token-0987654321", True),  # rotation: both active
        (b"bearer   new-token-1234567890  ", True),
        (b"Bearer new-token-123456789", False),  # one byte short
        (b"Bearer new-token-12345678901", False),
        (b"Bearer Xew-token-1234567890", False),
        (b"Bearer ", False),
        (b"Bearer", False),
        (b"Token new-token-1234567890", False),
        (b"new-token-1234567890", False),
        (b"Basic " + b64(b"ons:senha-forte"), True),
        (b"Basic " + b64(b"onz:senha-forte"), False),
        (b"Basic " + b64(b"ons:senha-fortE"), False),
        (b"Basic " + b64(b"ons"), False),
        (b"Basic " + b64(b":senha-forte"), False),
        (b"Basic !!notbase64!!", False),
        (b"Basic " + b64("ons:senha-forte-ção".encode()), False),
        ("Basic çççç".encode(), False),
        (b"\xff\xfe\x00", False),
        (None, False),
        (b"", False),
        (b"Bearer " + b"a" * 65536, False),
    ],
)
def test_verify(header: bytes | None, ok: bool) -> None:
    assert VERIFIER.verify(header) is ok


def test_no_credentials_means_no_check() -> None:
    assert Verifier([], realm="invoicy").verify(None) is True


def test_challenge_names_each_scheme_and_realm() -> None:
    assert VERIFIER.challenge == 'Bearer realm="sintegre", Basic realm="sintegre"'


def test_basic_header_round_trip() -> None:
    assert VERIFIER.verify(basic_header("ons", "senha-forte").encode())


@given(st.binary(max_size=MAX_AUTHORIZATION_BYTES + 10))
def test_any_header_bytes_give_a_boolean(header: bytes) -> None:
    assert VERIFIER.verify(header) in (True, False)


@given(st.text(max_size=200))
def test_any_text_header_gives_a_boolean(header: str) -> None:
    assert VERIFIER.verify(header.encode("utf-8", "surrogatepass")) in (True, False)


# --- header credentials (the Portal's chaveSecreta in `secret`) ------------------------------

SECRET = "0484a6e22cf66a2d3da8953789f8c6b3"
NEXT_SECRET = "5d0e9c41b7a2f83e6c1d4a90b2e7f356"
HEADER_VERIFIER = Verifier(
    [
        HeaderCredential(type="header", name="secret", value=SECRET),
        HeaderCredential(type="header", name="secret", value=NEXT_SECRET),
        BearerCredential(type="bearer", token="token-for-scripts-123"),
    ],
    realm="pucomex",
)


@pytest.mark.parametrize(
    ("authorization", "presented", "ok"),
    [
        (None, {b"secret": SECRET.encode()}, True),
        (None, {b"secret": NEXT_SECRET.encode()}, True),  # rotation: both active
        (None, {b"secret": SECRET[:-1].encode()}, False),
        (None, {b"secret": SECRET.encode() + b" "}, False),
        (None, {b"secret": b""}, False),
        (None, {b"secret": None}, False),  # the header came twice
        (None, {b"secret": b"a" * (MAX_AUTHORIZATION_BYTES + 1)}, False),
        (None, {b"other": SECRET.encode()}, False),
        (None, {}, False),
        (None, None, False),
        (b"Bearer token-for-scripts-123", None, True),  # either kind admits
        (b"Bearer token-for-scripts-123", {b"secret": b"wrong"}, True),
        (b"Bearer wrong", {b"secret": SECRET.encode()}, True),
        (b"Bearer " + SECRET.encode(), None, False),  # the secret is no Bearer token
    ],
)
def test_header_credentials(
    authorization: bytes | None, presented: dict[bytes, bytes | None] | None, ok: bool
) -> None:
    assert HEADER_VERIFIER.verify(authorization, presented) is ok


def test_header_challenge_names_the_header_not_its_value() -> None:
    assert HEADER_VERIFIER.challenge == (
        'Bearer realm="pucomex", Header realm="pucomex", name="secret"'
    )
    assert HEADER_VERIFIER.header_names == frozenset({b"secret"})


@given(st.dictionaries(st.sampled_from([b"secret", b"x"]), st.none() | st.binary(max_size=64)))
def test_any_presented_headers_give_a_boolean(presented: dict[bytes, bytes | None]) -> None:
    assert HEADER_VERIFIER.verify(None, presented) in (True, False)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Authorization", "carries something else"),
        ("content-length", "carries something else"),
        ("HOST", "carries something else"),
        ("event-type", "carries something else"),
        ("se cret", "not an HTTP header name"),
        ("secret\n", "not an HTTP header name"),
        ("séc", "not an HTTP header name"),
        ("", "at least 1 character"),
    ],
)
def test_header_credential_names_are_checked(name: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        HeaderCredential(type="header", name=name, value=SECRET)


@pytest.mark.parametrize("value", [" lead", "trail ", "line\nbreak", "acentuação", ""])
def test_header_credential_values_are_sendable(value: str) -> None:
    with pytest.raises(ValidationError):
        HeaderCredential(type="header", name="secret", value=value)


def test_header_credential_names_are_lowercased() -> None:
    assert HeaderCredential(type="header", name="X-Chave", value=SECRET).name == "x-chave"
