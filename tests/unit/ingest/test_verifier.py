"""Credentials: Basic and Bearer, rotation, and every malformed header a 401 (never a 500)."""

from __future__ import annotations

import base64
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

import receiver.ingest.verifier
from receiver.credentials import HeaderCredential, basic_header
from receiver.ingest.verifier import MAX_AUTHORIZATION_BYTES, Verifier

VERIFIER = Verifier(
    "sintegre",
    bearer=["new-token-1234567890", "old-token-0987654321"],
    basic=[("ons", "senha-forte")],
)


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
    assert Verifier("invoicy").verify(None) is True


def test_challenge_names_each_scheme_and_realm() -> None:
    assert VERIFIER.challenge == 'Bearer realm="sintegre", Basic realm="sintegre"'


def test_basic_header_round_trip() -> None:
    assert VERIFIER.verify(basic_header("ons", "senha-forte").encode())


TOKENS = {b"new-token-1234567890", b"old-token-0987654321"}
BASIC = b"ons:senha-forte"


def carries_a_credential(header: bytes) -> bool:
    """What verify must answer, written plainly: a configured token or user and password."""
    if len(header) > MAX_AUTHORIZATION_BYTES:
        return False
    scheme, _, value = header.strip().partition(b" ")
    value = value.strip()
    if scheme.lower() == b"bearer":
        return value in TOKENS
    if scheme.lower() == b"basic":
        try:
            return base64.b64decode(value, validate=True) == BASIC
        except ValueError:
            return False
    return False


VALID = [b"Bearer " + token for token in sorted(TOKENS)] + [b"Basic " + b64(BASIC)]
# Valid headers, near misses made from them, and anything at all.
HEADERS = st.one_of(
    st.binary(max_size=MAX_AUTHORIZATION_BYTES + 10),
    st.sampled_from(VALID),
    st.builds(
        lambda header, cut, extra, upper: (
            header[: len(header) - cut] + extra if not upper else header.upper()
        ),
        st.sampled_from(VALID),
        st.integers(0, 3),
        st.sampled_from([b"", b" ", b"x", b"\x00", b"  \t"]),
        st.booleans(),
    ),
)


@given(HEADERS)
def test_any_header_bytes_give_exactly_the_right_answer(header: bytes) -> None:
    assert VERIFIER.verify(header) is carries_a_credential(header)


@given(st.text(max_size=200))
def test_any_text_header_gives_exactly_the_right_answer(header: str) -> None:
    raw = header.encode("utf-8", "surrogatepass")
    assert VERIFIER.verify(raw) is carries_a_credential(raw)
    bearer = b"Bearer " + raw
    assert VERIFIER.verify(bearer) is carries_a_credential(bearer)


class CountingHmac:
    """receiver.ingest.verifier's ``hmac``, counting every comparison and the lengths it was
    given."""

    def __init__(self) -> None:
        self.compared: list[tuple[int, int]] = []

    def compare_digest(self, a: bytes, b: bytes) -> bool:
        self.compared.append((len(a), len(b)))
        return hmac.compare_digest(a, b)


@pytest.mark.parametrize(
    "header",
    [
        b"Bearer new-token-1234567890",  # the first configured token
        b"Bearer old-token-0987654321",  # the last
        b"Bearer new-token-123456789",  # one byte short
        b"Bearer wrong",
        b"Bearer " + b"x" * 4000,
    ],
)
def test_every_bearer_token_is_compared_in_constant_time(
    monkeypatch: pytest.MonkeyPatch, header: bytes
) -> None:
    """Whatever the header, each configured token is compared, digest to digest (32 bytes
    each, so the length of neither shows), with hmac.compare_digest: never ==, no early exit."""
    counting = CountingHmac()
    monkeypatch.setattr(receiver.ingest.verifier, "hmac", counting)
    VERIFIER.verify(header)
    assert counting.compared == [(32, 32)] * len(TOKENS)


@pytest.mark.parametrize(
    "user_password", [BASIC, b"ons:wrong", b"onz:senha-forte", b"x:y", b"ons:" + b"p" * 2000]
)
def test_basic_user_and_password_are_both_compared_in_constant_time(
    monkeypatch: pytest.MonkeyPatch, user_password: bytes
) -> None:
    counting = CountingHmac()
    monkeypatch.setattr(receiver.ingest.verifier, "hmac", counting)
    VERIFIER.verify(b"Basic " + b64(user_password))
    assert counting.compared == [(32, 32), (32, 32)]  # username, then password, always both


# --- header credentials (the Portal's chaveSecreta in `secret`) ------------------------------

SECRET = "0484a6e22cf66a2d3da8953789f8c6b3"
NEXT_SECRET = "5d0e9c41b7a2f83e6c1d4a90b2e7f356"
HEADER_VERIFIER = Verifier(
    "pucomex",
    bearer=["token-for-scripts-123"],
    headers=[("secret", SECRET), ("secret", NEXT_SECRET)],
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
def test_any_presented_headers_give_exactly_the_right_answer(
    presented: dict[bytes, bytes | None],
) -> None:
    expected = presented.get(b"secret") in (SECRET.encode(), NEXT_SECRET.encode())
    assert HEADER_VERIFIER.verify(None, presented) is expected


@pytest.mark.parametrize(
    "presented",
    [{b"secret": SECRET.encode()}, {b"secret": NEXT_SECRET.encode()}, {b"secret": b"x"}, {}],
)
def test_every_header_secret_is_compared_in_constant_time(
    monkeypatch: pytest.MonkeyPatch, presented: dict[bytes, bytes | None]
) -> None:
    """Present, wrong or absent, each configured secret costs one digest comparison."""
    counting = CountingHmac()
    monkeypatch.setattr(receiver.ingest.verifier, "hmac", counting)
    HEADER_VERIFIER.verify(None, presented)
    assert counting.compared == [(32, 32), (32, 32)]


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
