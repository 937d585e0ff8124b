"""Which resolved addresses the sender may reach: SSRF refusals, exemptions, rebinding answers."""

from __future__ import annotations

import ipaddress

import pytest

from receiver.outbound import AddressPolicy, AddressRefused, GuardedBackend

REFUSED = [
    ("127.0.0.1", "loopback"),
    ("127.10.20.30", "loopback"),
    ("::1", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "metadata"),
    ("169.254.10.10", "link-local"),
    ("fe80::1", "link-local"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("100.127.255.254", "carrier-grade NAT"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("fc00::1", "unique local"),
    ("fd12:3456::1", "unique local"),
    ("::ffff:127.0.0.1", "IPv4-mapped"),
    ("::ffff:8.8.8.8", "IPv4-mapped"),
    ("2002:7f00:1::1", "6to4"),
    ("224.0.0.1", "multicast"),
    ("198.18.0.1", "private"),
    ("240.0.0.1", "reserved"),
]


@pytest.mark.parametrize(("address", "why"), REFUSED)
def test_internal_addresses_are_refused(address: str, why: str) -> None:
    reason = AddressPolicy().refusal(ipaddress.ip_address(address))
    assert reason is not None
    assert why in reason


@pytest.mark.parametrize("address", ["8.8.8.8", "161.148.1.10", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert AddressPolicy().refusal(ipaddress.ip_address(address)) is None


def test_allowed_networks_exempt_exactly_their_addresses() -> None:
    policy = AddressPolicy(["127.0.0.0/8", "10.20.0.0/16"])
    assert policy.refusal(ipaddress.ip_address("127.0.0.1")) is None
    assert policy.refusal(ipaddress.ip_address("::ffff:127.0.0.1")) is None
    assert policy.refusal(ipaddress.ip_address("10.20.1.1")) is None
    assert policy.refusal(ipaddress.ip_address("10.21.1.1")) is not None
    assert policy.refusal(ipaddress.ip_address("::1")) is not None
    assert policy.refusal(ipaddress.ip_address("169.254.169.254")) is not None


def test_one_internal_answer_refuses_the_name() -> None:
    # A name that resolves both outside and inside (rebinding, split answers) is not trusted.
    with pytest.raises(AddressRefused, match="loopback"):
        AddressPolicy().check("rebind.example", ["93.184.216.34", "127.0.0.1"])
    with pytest.raises(AddressRefused, match="did not resolve"):
        AddressPolicy().check("nothing.example", [])
    assert AddressPolicy().check("ok.example", ["93.184.216.34"]) == ["93.184.216.34"]


@pytest.mark.anyio
async def test_the_backend_connects_only_to_checked_addresses() -> None:
    asked: list[tuple[str, int]] = []

    async def resolver(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return ["169.254.169.254"]

    backend = GuardedBackend(AddressPolicy(), resolver)
    with pytest.raises(AddressRefused, match="metadata"):
        await backend.connect_tcp("metadata.example", 443, timeout=1)
    assert asked == [("metadata.example", 443)]
    with pytest.raises(AddressRefused):
        await backend.connect_unix_socket("/var/run/docker.sock")


@pytest.mark.anyio
@pytest.mark.parametrize(
    "host", ["127.0.0.1", "2130706433", "0x7f000001", "127.1", "0177.0.0.1", "localhost", "::1"]
)
async def test_numeric_and_named_forms_of_loopback_resolve_and_are_refused(host: str) -> None:
    backend = GuardedBackend(AddressPolicy())
    with pytest.raises(AddressRefused):
        await backend.connect_tcp(host, 443, timeout=2)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
