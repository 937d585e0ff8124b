"""Client of the Portal Único API: mutual TLS, the ``autenticar`` token flow, the Duimp
consultation, the subscription API and recovery of failed deliveries.

Errors are the package's ``PortalError`` family (``receiver.errors``): ``PortalAuthError`` when
the Portal refuses the certificate or session, ``SubscriptionError`` when the subscription API
refuses a request (or it breaks the seed's field rules and is never sent).
"""

from receiver.portal.client import DUIMP_VERSION_PATH, DUIMP_VERSIONS_PATH, PortalClient
from receiver.portal.recovery import RecoveryReport, recover, recover_periodically
from receiver.portal.subscriptions import (
    FailureRecord,
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
    "PortalClient",
    "RecoveryReport",
    "Subscription",
    "SubscriptionAPI",
    "SyncPlan",
    "apply_sync",
    "plan_sync",
    "recover",
    "recover_periodically",
]
