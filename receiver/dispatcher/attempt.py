"""One delivery attempt, as the Portal makes it: one POST with the Portal's headers, one deadline
for all of it, and an outcome to record whatever happens (only HTTP 200 is a receipt).
"""

from __future__ import annotations

import asyncio
import functools

import httpx

from receiver.dispatcher.config import DispatcherSettings
from receiver.dispatcher.records import AttemptOutcome, DueDelivery
from receiver.store.tables import utcnow

USER_AGENT = "portal-receiver-dispatcher/0.1"
EXCERPT_CHARS = 300


@functools.lru_cache(maxsize=4096)
def parsed(endpoint: str) -> httpx.URL:
    """The endpoint parsed once, not on every delivery (a parse is 5% of a delivery's CPU)."""
    return httpx.URL(endpoint)


def origin_of(endpoint: str) -> str:
    """The endpoint's scheme, host and port: what the per-endpoint concurrency bound counts."""
    try:
        url = parsed(endpoint)
    except httpx.InvalidURL:
        # The pattern admits it but httpx cannot parse it ("[FceE]"): the attempt itself fails
        # and is recorded; any key will do for the concurrency bound.
        return endpoint
    return f"{url.scheme}://{url.host}:{url.port or 443}"


def where(endpoint: str) -> str:
    """The endpoint as logs and failure records show it."""
    # The query string may carry a subscriber's token: never put it in a failure record or a log.
    return endpoint.split("?", 1)[0].split("#", 1)[0]


async def attempt_delivery(
    client: httpx.AsyncClient, delivery: DueDelivery, settings: DispatcherSettings
) -> AttemptOutcome:
    """POST the delivery's body to its endpoint once; every failure is an outcome, not raised."""
    # What receivers in production see from the Portal: the event id, the recipient, the
    # subscription's chaveSecreta in `secret` and no Authorization (unless the subscription
    # asked for InvoiCy-style Basic or Bearer instead).
    headers = {
        "Content-Type": delivery.content_type,
        "event-type": delivery.evento,
        "destinatario-tipo": settings.destinatario_tipo,
        "destinatario-id": settings.destinatario_id,
        **delivery.auth.headers(),
    }
    started = utcnow()
    status: int | None = None
    excerpt: str | None = None
    limit = settings.attempt_timeout_seconds
    try:
        # One deadline for the whole attempt: connect, send, answer and the bounded read.
        async with asyncio.timeout(limit):
            request = client.build_request(
                "POST", parsed(delivery.endpoint), content=delivery.body, headers=headers
            )
            response = await client.send(request, stream=True)
            try:
                status = response.status_code
                excerpt = await _read_excerpt(response, settings.max_response_bytes)
            finally:
                await response.aclose()
    except TimeoutError:
        description = f"no answer within {limit:g} s from {where(delivery.endpoint)}"
        return AttemptOutcome(False, status, description, started, utcnow(), excerpt)
    except Exception as error:  # every other failure is an attempt failed, with its reason
        description = f"{type(error).__name__} for {where(delivery.endpoint)}: {error}"
        return AttemptOutcome(False, None, description[:1000], started, utcnow())
    finished = utcnow()
    if status == 200:
        return AttemptOutcome(True, 200, "HTTP 200 (receipt)", started, finished, excerpt)
    description = f"HTTP {status} from {where(delivery.endpoint)} (only 200 is a receipt)"
    if excerpt:
        description += f": {excerpt[:EXCERPT_CHARS]}"
    return AttemptOutcome(False, status, description, started, finished, excerpt)


async def _read_excerpt(response: httpx.Response, limit: int) -> str | None:
    """At most ``max_response_bytes`` of the answer, undecoded (no decompression bombs)."""
    if response.is_stream_consumed:
        # Already in memory: a response built from bytes, as test transports make them.
        data = response.content[:limit]
    else:
        data = b""
        if limit > 0:
            async for chunk in response.aiter_raw():
                data += chunk[: limit - len(data)]
                if len(data) >= limit:
                    break
    return data.decode("utf-8", errors="replace") if data else None
