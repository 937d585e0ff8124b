"""Address checks: allowlist sets, IPv4-mapped peers, and the client behind trusted proxies."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from receiver.errors import ConfigError
from receiver.ingest.allowlist import Allowlist, ClientResolver, parse_address
from tests.conftest import ROOT

ALLOW = Allowlist.from_mapping(
    {
        "pucomex": ["161.148.0.0/16", "200.198.192.0/18"],
        "sintegre": ["198.51.100.10", "2001:db8::/32"],
        "invoicy": [],
    }
)


@pytest.mark.parametrize(
    ("source", "address", "allowed"),
    [
        ("pucomex", "161.148.3.4", True),
        ("pucomex", "::ffff:161.148.3.4", True),
        ("pucomex", "[::ffff:161.148.3.4]", True),
        ("pucomex", "161.149.0.1", False),
        ("pucomex", "200.198.255.255", True),
        ("pucomex", "200.199.0.0", False),
        ("sintegre", "198.51.100.10", True),
        ("sintegre", "198.51.100.11", False),
        ("sintegre", "2001:db8:ffff::1", True),
        ("sintegre", "2001:db9::1", False),
        ("sintegre", "fe80::1%eth0", False),
        ("invoicy", "127.0.0.1", False),  # empty list: nobody
        ("absent", "161.148.3.4", False),  # missing source: nobody
        ("pucomex", "not an address", False),
        ("pucomex", "0xa1.148.3.4", False),
        ("pucomex", "", False),
    ],
)
def test_allows(source: str, address: str, allowed: bool) -> None:
    assert ALLOW.allows(source, parse_address(address)) is allowed


@given(st.ip_addresses(v=4))
def test_mapped_peer_gets_the_same_answer_as_its_ipv4_form(address: ipaddress.IPv4Address) -> None:
    mapped = f"::ffff:{address}"
    for source in ("pucomex", "sintegre", "invoicy"):
        assert ALLOW.allows(source, parse_address(mapped)) == ALLOW.allows(
            source, parse_address(str(address))
        )


@given(st.text(max_size=60))
def test_parse_address_never_raises(text: str) -> None:
    parse_address(text)


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (["::ffff:0:0/96"], "IPv4-mapped"),
        (["::ffff:1.2.3.4"], "IPv4-mapped"),
        (["::/0"], "IPv4-mapped"),
        (["300.1.1.1"], "not an IP address or CIDR"),
        ([42], "expected an address or CIDR string"),
    ],
)
def test_bad_entries_are_refused_with_file_and_key(entries: list[object], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        Allowlist.from_mapping({"pucomex": entries}, origin="allow.yaml")
    assert str(error.value).startswith("allow.yaml: pucomex.0: ")


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        Allowlist.load(tmp_path / "nope.yaml")


def test_project_allowlist_carries_the_published_portal_ranges() -> None:
    allow = Allowlist.load(ROOT / "allowlist.yaml")
    assert allow.allows("pucomex", parse_address("161.148.10.1"))
    assert allow.allows("pucomex", parse_address("189.9.200.1"))
    assert allow.allows("pucomex", parse_address("200.198.200.1"))
    assert not allow.allows("pucomex", parse_address("127.0.0.1"))
    assert not allow.allows("sintegre", parse_address("161.148.10.1"))


RESOLVER = ClientResolver(["10.0.0.0/8", "fd00::/8"])


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("203.0.113.1", [], "203.0.113.1"),
        ("203.0.113.1", ["161.148.0.1"], "203.0.113.1"),  # untrusted peer: header ignored
        ("10.0.0.1", [], "10.0.0.1"),
        ("10.0.0.1", ["161.148.0.1"], "161.148.0.1"),
        ("10.0.0.1", ["161.148.0.1, 203.0.113.5"], "203.0.113.5"),  # right-most untrusted
        ("10.0.0.1", ["161.148.0.1", "10.2.2.2"], "161.148.0.1"),  # several headers, in order
        ("10.0.0.1", ["161.148.0.1,10.3.3.3, 10.2.2.2"], "161.148.0.1"),
        ("10.0.0.1", ["10.3.3.3"], "10.3.3.3"),  # all trusted: the left-most
        ("10.0.0.1", ["garbage"], None),
        ("::ffff:10.0.0.1", ["161.148.0.1"], "161.148.0.1"),
        ("fd00::1", ["[2001:db8::5]"], "2001:db8::5"),
        ("10.0.0.1", ["::ffff:161.148.0.1"], "161.148.0.1"),
        (None, [], None),
    ],
)
def test_resolver(peer: str | None, forwarded: list[str], client: str | None) -> None:
    resolved = RESOLVER.resolve(peer, forwarded)
    assert (str(resolved) if resolved is not None else None) == client


@given(st.lists(st.ip_addresses(v=4).map(str), max_size=5))
def test_untrusted_peer_can_never_choose_its_address(chain: list[str]) -> None:
    resolved = RESOLVER.resolve("198.18.0.1", [", ".join(chain)] if chain else [])
    assert str(resolved) == "198.18.0.1"
