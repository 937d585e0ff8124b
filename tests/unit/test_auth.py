"""Credentials: Basic and Bearer, rotation, and every malformed header a 401 (never a 500)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from receiver.auth import MAX_AUTHORIZATION_BYTES, Verifier, basic_header
from receiver.config import BasicCredential, BearerCredential, Credential

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
