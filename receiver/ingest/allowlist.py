"""Who may send: the published egress addresses of each source, and the real client behind proxies.

Pure logic, no I/O beyond reading the file once at start-up. Peers are normalised before any
check, because a server bound to ``::`` sees IPv4 senders as ``::ffff:a.b.c.d`` and an IPv4
``IPSet`` would not contain them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import netaddr
import yaml

from receiver.errors import ConfigError

_MAPPED = netaddr.IPNetwork("::ffff:0:0/96")


def parse_address(text: str) -> netaddr.IPAddress | None:
    """The address in ``text`` with IPv4-mapped IPv6 made IPv4, or None if it is not an address."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if "%" in text:  # a zone id says which interface, not who is speaking
        text = text.split("%", 1)[0]
    try:
        address = netaddr.IPAddress(text)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        return None
    if address.version == 6 and address in _MAPPED:
        return address.ipv4()
    return address


def _network(entry: Any, origin: str, key: str) -> netaddr.IPNetwork:
    if not isinstance(entry, str):
        raise ConfigError(f"{origin}: {key}: expected an address or CIDR string, got {entry!r}")
    try:
        network = netaddr.IPNetwork(entry.strip())
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise ConfigError(f"{origin}: {key}: {entry!r} is not an IP address or CIDR") from None
    if network.version == 6 and (network in _MAPPED or _MAPPED in network):
        raise ConfigError(
            f"{origin}: {key}: {entry!r} is an IPv4-mapped IPv6 range; write the IPv4 form, "
            "mapped peers are matched against IPv4 entries"
        )
    return network


def build_ipset(entries: Iterable[Any], origin: str, key: str) -> netaddr.IPSet:
    return netaddr.IPSet(
        _network(entry, origin, f"{key}.{index}") for index, entry in enumerate(entries)
    )


class Allowlist:
    """Per-source address sets; a source that is absent or empty admits nobody (fail closed)."""

    def __init__(self, sets: Mapping[str, netaddr.IPSet]) -> None:
        self._sets = dict(sets)

    @classmethod
    def from_mapping(cls, raw: Any, origin: str = "allowlist.yaml") -> Allowlist:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{origin}: (top level): expected a mapping of source to addresses")
        sets = {}
        for source, entries in raw.items():
            if entries is None:
                entries = []
            if not isinstance(entries, list):
                raise ConfigError(f"{origin}: {source}: expected a list of addresses or CIDRs")
            sets[str(source)] = build_ipset(entries, origin, str(source))
        return cls(sets)

    @classmethod
    def load(cls, path: Path) -> Allowlist:
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: file not found (the allowlist key names it)") from None
        except yaml.YAMLError:
            raise ConfigError(f"{path}: (top level): not valid YAML") from None
        return cls.from_mapping(raw, origin=str(path))

    def allows(self, source: str, address: netaddr.IPAddress | None) -> bool:
        if address is None:
            return False
        addresses = self._sets.get(source)
        return addresses is not None and address in addresses

    def sources(self) -> list[str]:
        return sorted(self._sets)

    def sizes(self) -> dict[str, int]:
        """Source -> how many networks it admits (overlapping entries counted once)."""
        return {source: len(self._sets[source].iter_cidrs()) for source in sorted(self._sets)}

    def every_address(self) -> netaddr.IPSet:
        """The addresses any source admits, together."""
        union = netaddr.IPSet()
        for addresses in self._sets.values():
            union |= addresses
        return union


class ClientResolver:
    """Finds the real client: the direct peer, or behind trusted proxies the right-most untrusted hop."""

    def __init__(self, trusted_proxies: Iterable[str], origin: str = "receiver.yaml") -> None:
        self._trusted = build_ipset(list(trusted_proxies), origin, "trusted_proxies")

    def resolve(self, peer: str | None, forwarded_for: list[str]) -> netaddr.IPAddress | None:
        """``forwarded_for`` holds every X-Forwarded-For header value, in the order received."""
        address = parse_address(peer) if peer else None
        if address is None or address not in self._trusted:
            return address
        hops = [hop for value in forwarded_for for hop in value.split(",") if hop.strip()]
        for hop in reversed(hops):
            hop_address = parse_address(hop)
            if hop_address is None:
                # A hop we cannot read may be anything: we cannot see past it, so nobody gets in.
                return None
            if hop_address not in self._trusted:
                return hop_address
            address = hop_address
        return address
