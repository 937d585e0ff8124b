"""The dispatcher's outbound safety, which now lives in ``receiver.outbound`` (the handlers use
it too); these names stay importable from here."""

from receiver.outbound import (
    AddressPolicy,
    AddressRefused,
    GuardedBackend,
    GuardedTransport,
    Resolver,
    outbound_ssl_context,
    system_resolver,
)

__all__ = [
    "AddressPolicy",
    "AddressRefused",
    "GuardedBackend",
    "GuardedTransport",
    "Resolver",
    "outbound_ssl_context",
    "system_resolver",
]
