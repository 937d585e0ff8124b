"""What ``receiver serve`` enforces on a connection before the app sees a request: which peers
may connect at all, how large and how slow a request head may be, and what a request gets when
the connection limit is reached.

``EdgePolicy.from_settings`` builds it from ``receiver.yaml`` and the allowlist; the serving
protocol (``receiver.ingest.http``) is given it by ``ReceiverProtocol.configure``, once at
start-up in every serving process and again on SIGHUP. Pure logic apart from the audit lines and counters.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import netaddr

from receiver import metrics
from receiver.config import Settings
from receiver.ingest.allowlist import Allowlist, build_ipset, parse_address

audit = logging.getLogger("receiver.audit")

GATE_CACHE_SIZE = 4096


class ConnectionGate:
    """Which peers may open a connection: the addresses of every source's allowlist, the trusted
    proxies (a proxy in front, and its health checks) and ``monitoring_addresses`` (a load
    balancer's TCP check). Anyone else is closed before a byte of the request is read, so
    connections from elsewhere cannot fill ``limit_concurrency``. Admission is only about holding
    a connection: every webhook is still checked against its source's allowlist.

    Loopback is not admitted for its own sake any more: health checks and metrics scrapes, which
    it was for, go to the admin listener (``admin_listen``), and a proxy on the same host is a
    trusted proxy.

    ``admitted`` None admits everyone (a protocol that was never configured, as in tests).
    """

    def __init__(self, admitted: netaddr.IPSet | None) -> None:
        self._admitted = admitted
        # host text -> admitted?: netaddr takes ~25 us to answer; bounded, emptied when full.
        self._known: dict[str, bool] = {}

    @classmethod
    def from_settings(cls, settings: Settings, allowlist: Allowlist) -> ConnectionGate:
        admitted = allowlist.every_address()
        admitted |= build_ipset(settings.trusted_proxies, settings.origin, "trusted_proxies")
        admitted |= build_ipset(
            settings.server.monitoring_addresses, settings.origin, "server.monitoring_addresses"
        )
        return cls(admitted)

    def admits(self, host: str | None) -> bool:
        if self._admitted is None:
            return True
        if host is None:  # a TCP peer always has an address; without one, nobody gets in
            return False
        known = self._known.get(host)
        if known is None:
            address = parse_address(host)
            known = address is not None and address in self._admitted
            if len(self._known) >= GATE_CACHE_SIZE:
                self._known.clear()
            self._known[host] = known
        return known


class RefusalLog:
    """Audit lines for refusals, at most ``burst`` per ``period`` seconds; the rest are counted and
    told in one line at the first refusal of a later period, so a flood cannot fill the disk.
    The counter ``receiver_edge_refused_total`` counts every one of them."""

    def __init__(
        self,
        one: str,
        many: str,
        burst: int = 10,
        period: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._one = one
        self._many = many
        self._burst = burst
        self._period = period
        self._clock = clock
        self._period_ends = float("-inf")
        self._logged = 0
        self._untold = 0

    def refused(self, reason: str, peer: str | None, detail: str) -> None:
        metrics.EDGE_REFUSED.labels(reason).inc()
        now = self._clock()
        if now >= self._period_ends:
            if self._untold:
                audit.warning(
                    "%d more %s refused in %.0f s, not logged one by one (see "
                    "receiver_edge_refused_total)",
                    self._untold,
                    self._many,
                    self._period,
                )
            self._period_ends = now + self._period
            self._logged = self._untold = 0
        if self._logged < self._burst:
            self._logged += 1
            audit.warning("refused %s from %s: %s", self._one, peer, detail)
        else:
            self._untold += 1


# Process-wide, so that a reload does not reset them.
CONNECTIONS_REFUSED = RefusalLog("a connection", "connections")
HEADS_REFUSED = RefusalLog("a request", "request heads")
BUSY_REFUSED = RefusalLog("a request", "requests at the connection limit")


@dataclass(frozen=True, slots=True)
class EdgePolicy:
    header_timeout: float = 10.0
    # The request target and every header line (name, value, 4 bytes of separators).
    max_header_bytes: int = 32_768
    max_header_count: int = 100
    retry_after_seconds: int = 5
    gate: ConnectionGate = field(default_factory=lambda: ConnectionGate(None))

    @classmethod
    def from_settings(cls, settings: Settings, allowlist: Allowlist) -> EdgePolicy:
        return cls(
            header_timeout=settings.server.header_timeout_seconds,
            max_header_bytes=settings.server.max_header_bytes,
            max_header_count=settings.server.max_header_count,
            retry_after_seconds=settings.retry_after_seconds,
            gate=ConnectionGate.from_settings(settings, allowlist),
        )
