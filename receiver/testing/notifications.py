"""``make_notification``: a ``Notification`` as the worker builds one from what ingest stored."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from receiver.ids import new_id
from receiver.sources import dedup_key
from receiver.store import utcnow
from receiver.worker.attempt import read_notification
from receiver.worker.routing import Notification

# What the Portal sends beside the body (issue 15): the event id, the recipient. Its ``secret``
# header is never stored, so a handler never sees it.
PORTAL_HEADERS = {
    "content-type": "application/json",
    "destinatario-tipo": "CNPJ",
    "destinatario-id": "00000000000191",
}


def make_notification(
    source: str,
    event: str | None = None,
    *,
    payload: Any = None,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    received_at: datetime | None = None,
    recovered: bool = False,
) -> Notification:
    """A ``Notification`` as the worker gives it to a handler: from ``payload`` (a dict, sent as
    JSON) or ``body`` (the bytes as received, such as a recorded delivery), with the dedup and
    idempotency key of its content (the same body gives the same key, as in the store), a new id,
    the received time (now, unless given), and ``parsed``: the payload as its event's model.

    ``event`` is what the sender names (PUCOMEX's ``event-type`` header, which is added to the
    headers; for SINtegre and InvoiCy it may be left out: the body names it). A body its source's
    parser cannot read, or that does not fit its event's model, raises ``ParseError`` with the
    reason the worker would quarantine it with.
    """
    if (payload is None) == (body is None):
        raise TypeError("make_notification: give payload= (a dict) or body= (bytes), not both")
    if body is None:
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    sent: dict[str, str] = {}
    if source == "pucomex":
        sent.update(PORTAL_HEADERS)
        if event is not None:
            sent["event-type"] = event
    sent.update({name.lower(): value for name, value in (headers or {}).items()})
    return read_notification(
        note_id=new_id(),
        source=source,
        event=event,
        received_at=received_at if received_at is not None else utcnow(),
        body=body,
        headers=sent,
        dedup_key=dedup_key(source, body),
        recovered=recovered,
    )
