"""Who is asking: operator accounts checked against argon2 hashes, or a user named by a trusted
authenticating proxy; and a limit on failed logins.

A login that fails costs the same whether the user exists or not (a dummy hash is verified), so
the answer does not tell which names exist.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from netaddr import AddrFormatError, IPAddress, IPNetwork

from receiver.consolesettings import ConsoleSettings, Role

# argon2-cffi's defaults (RFC 9106's second recommendation: argon2id, 64 MiB, 3 passes): 0.31 s
# per verification on this 2-core machine under load, which also slows a guesser down; the
# console verifies in a thread, off the event loop.
HASHER = PasswordHasher()
_DUMMY_HASH = HASHER.hash("not a password of anyone")


def hash_password(password: str) -> str:
    return HASHER.hash(password)


@dataclass(frozen=True, slots=True)
class Operator:
    name: str
    role: Role
    via: str  # "password" or "proxy"

    @property
    def may_replay(self) -> bool:
        return self.role == "operator"


def check_password(settings: ConsoleSettings, name: str, password: str) -> Operator | None:
    user = settings.user(name)
    stored = user.password_hash.get_secret_value() if user is not None else _DUMMY_HASH
    try:
        HASHER.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if user is None:
        return None
    return Operator(user.name, user.role, "password")


def from_proxy(settings: ConsoleSettings, peer: str | None, value: str | None) -> Operator | None:
    """The user the trusted header names, when the request comes straight from a trusted proxy."""
    if settings.trusted_header is None or not value or peer is None:
        return None
    try:
        address = IPAddress(peer)
    except (AddrFormatError, ValueError, TypeError):
        return None
    if address.version == 6 and address.is_ipv4_mapped():
        address = address.ipv4()
    if not any(address in IPNetwork(network) for network in settings.trusted_header_proxies):
        return None
    name = value.strip()
    if not name or len(name) > 200 or not name.isprintable():
        return None
    user = settings.user(name)
    return Operator(name, user.role if user is not None else settings.trusted_header_role, "proxy")


class LoginLimiter:
    """At most ``attempts`` failed logins per client address, and per user name, in a sliding
    window of ``window`` seconds; a success clears neither (a guesser who finds one password
    must not get a fresh budget for the next)."""

    def __init__(self, attempts: int, window: float) -> None:
        self.attempts = attempts
        self.window = window
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.setdefault(key, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def blocked(self, client: str, name: str) -> float:
        """Seconds until another try is allowed (0: allowed now)."""
        now = time.monotonic()
        wait = 0.0
        for key in (f"ip:{client}", f"user:{name}"):
            times = self._recent(key, now)
            if len(times) >= self.attempts:
                wait = max(wait, times[0] + self.window - now)
        if len(self._failures) > 10_000:  # forget idle keys, so the table cannot grow forever
            for key in [k for k, v in self._failures.items() if not self._recent(k, now)]:
                del self._failures[key]
        return wait

    def failed(self, client: str, name: str) -> None:
        now = time.monotonic()
        for key in (f"ip:{client}", f"user:{name}"):
            self._recent(key, now).append(now)
