"""The package's one exception tree, the dispatcher's errors included.

ReceiverError                  anything this package raises on purpose
├── ConfigError                a settings file, allowlist or handler list is wrong: fix it and restart
├── SchemaNotCurrent           the store's schema is behind, ahead or missing: run `receiver db upgrade`
├── StoreUnavailable           the store could not commit or answer: the sender should retry (503)
│   └── RefusedByStore         the store refused one item of a batch (not down): the rest went in
├── ParseError                 a stored body is not its source's notification: it is quarantined;
│                              read it with `receiver inbox show`, then `receiver replay` it
├── HandlerError               a handler module or router is wrong (import failed, unknown source)
├── StartupError               a handler module's lifespan (or on_startup hook) failed: the worker
│                              does not start; the message names the router and the cause
├── Retry                      raised by a handler to be run again later (``Retry(after=30)``)
├── GiveUp                     raised by a handler: no attempt can succeed, dead letter it now
│   └── AddressRefused         an outbound call to an internal address or a refused scheme
├── PortalError                a call to the Portal API failed; names endpoint and status
│   ├── PortalAuthError        authentication refused (certificate, role, client id)
│   └── SubscriptionError      the subscription API refused a request (bad field, unknown id)
├── InvalidField               a dispatcher API request breaks a field rule (400/422): fix it
│   └── ConflictingFields      two valid fields disagree, the body's id and the path's (409)
└── UnknownSubscription        no active subscription of the caller has that id (404): list them
"""

from __future__ import annotations


class ReceiverError(Exception):
    """Base class for every error raised on purpose by this package."""


class ConfigError(ReceiverError):
    """A configuration file is missing or invalid; the message names the file and the key."""


class SchemaNotCurrent(ReceiverError):
    """The store's tables are not at the revision this release needs (behind, ahead, or none):
    the message names the command to run. Serving commands exit 2 on it, like a settings error:
    restarting cannot help until someone upgrades."""


class StoreUnavailable(ReceiverError):
    """The store could not commit; nothing was acknowledged and the sender should try again."""


class RefusedByStore(StoreUnavailable):
    """The store refused this one item (a value it cannot hold), not the store being down: the
    other items of its batch were written. Values are checked before they are written
    (``receiver.storable``), so this is a refusal nobody foresaw (a trigger, a constraint)."""


class ParseError(ReceiverError, ValueError):
    """The stored body cannot be read as its source's notification (``receiver.sources.parse``):
    it is quarantined with this message, never refused. Once the parser or the sender is fixed,
    ``receiver replay --quarantined`` routes it again. A ``ValueError`` too, as it always was."""


class HandlerError(ReceiverError):
    """A handler module could not be loaded or registered something invalid."""


class StartupError(ReceiverError):
    """A handler module's lifespan or ``on_startup`` hook failed: the worker does not start
    (one line naming the module and the cause, a non-zero exit code)."""


class Retry(ReceiverError):
    """Raised by a handler to ask for another attempt, ``after`` seconds from now."""

    def __init__(self, after: float | None = None, reason: str = "handler asked to retry") -> None:
        super().__init__(reason)
        self.after = after


class GiveUp(ReceiverError):
    """Raised by a handler when another attempt cannot succeed (a refused address, a file over
    its limit): the job goes to the dead letters at once, with this message as the reason, and
    ``receiver replay`` runs it again once the cause is fixed."""


class AddressRefused(GiveUp):
    """An outbound call (``receiver.outbound``) would reach an address or use a scheme that is not
    allowed; a handler that lets it propagate is dead-lettered at once."""


class PortalError(ReceiverError):
    """A call to the Portal API failed."""

    def __init__(self, message: str, *, endpoint: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.status = status


class PortalAuthError(PortalError):
    """The Portal refused to authenticate us."""


class SubscriptionError(PortalError):
    """The Portal's subscription API refused a request."""


class InvalidField(ReceiverError):
    """A request to the dispatcher's subscription API breaks a field rule (seed
    ``pucomex-push-events-api.txt``); ``status`` is 400 for an unreadable body, else 422. The
    message names the field: fix it and send again."""

    def __init__(self, field: str, message: str, status: int = 422) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.status = status


class ConflictingFields(InvalidField):
    """Each value is valid, but two of them disagree (the body's id and the path's): 409."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(field, message, 409)


class UnknownSubscription(ReceiverError):
    """No active subscription with that id belongs to the caller (404); someone else's answers
    the same, so ids are not disclosed. List yours with ``GET /portal/api/ext/webhook``."""
