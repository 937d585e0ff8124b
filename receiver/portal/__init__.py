"""Client of the Portal Único API: mutual TLS, the ``autenticar`` token flow, the Duimp
consultation and the subscription API (with its failure search).

Errors are the package's ``PortalError`` family (``receiver.errors``): ``PortalAuthError`` when
the Portal refuses the certificate or session, ``SubscriptionError`` when the subscription API
refuses a request (or it breaks the seed's field rules and is never sent). Storing what the
Portal failed to deliver needs the store too: ``receiver.runtime.recovery``.
"""

from receiver.portal.client import DUIMP_VERSION_PATH, DUIMP_VERSIONS_PATH, PortalClient
from receiver.portal.subscriptions import (
    FailureRecord,
    PortalCaller,
    Subscription,
    SubscriptionAPI,
    SyncPlan,
    apply_sync,
    plan_sync,
)

__all__ = [
    "DUIMP_VERSIONS_PATH",
    "DUIMP_VERSION_PATH",
    "FailureRecord",
    "PortalCaller",
    "PortalClient",
    "Subscription",
    "SubscriptionAPI",
    "SyncPlan",
    "apply_sync",
    "plan_sync",
]
