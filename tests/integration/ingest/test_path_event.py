"""The path's event id: matched whole, so a trailing newline can never pass as part of an event.

"$" in a pattern also matches before a trailing newline: /webhooks/pucomex/<120 x a>%0A passed as
a 121-character event, which PostgreSQL then refused, failing the request's whole batch.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receiver import storable
from receiver.config import EVENT_ID
from receiver.ids import new_id
from tests.conftest import AppClient, bearer

pytestmark = pytest.mark.anyio


def path(event: str) -> str:
    """``event`` as one path segment, percent-encoded as a sender would (the app sees it decoded,
    newline included); dots too, or the client would resolve "." and ".." away."""
    return quote(event, safe="").replace(".", "%2E")


@pytest.mark.parametrize(
    "event",
    ["a" * 120 + "\n", "duimp.registro\n", "a" * 121, "duimp registro", "\nduimp", ".x", "é"],
)
async def test_a_path_that_is_not_an_event_id_is_refused_and_nothing_stored(
    ingest: AppClient, event: str
) -> None:
    async with ingest.client() as client:
        answer = await client.post(
            f"/webhooks/pucomex/{path(event)}", content=b"{}", headers=bearer()
        )
    assert answer.status_code == 404
    assert ingest.store.count_notes() == 0


async def test_a_path_event_of_120_characters_is_stored(ingest: AppClient) -> None:
    async with ingest.client() as client:
        answer = await client.post(
            f"/webhooks/pucomex/{'a' * 120}", content=b"{}", headers=bearer()
        )
    assert answer.status_code == 200
    row = ingest.store.note(answer.json()["id"])
    assert row is not None and row["event"] == "a" * 120


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(event=st.text(st.characters(codec="utf-8"), max_size=130))
async def test_any_path_event_is_refused_or_stored_exactly(ingest: AppClient, event: str) -> None:
    """Either the path is an event id (stored as it is, storable everywhere) or it is refused."""
    body = json.dumps({"n": new_id()}).encode()
    async with ingest.client() as client:
        answer = await client.post(
            f"/webhooks/pucomex/{path(event)}", content=body, headers=bearer()
        )
    if answer.status_code == 200:
        row = ingest.store.note(answer.json()["id"])
        assert row is not None and row["event"] == event
        assert EVENT_ID.fullmatch(event) and storable.problem(event, 120) is None
    else:
        assert answer.status_code in (307, 404)  # 307: "" makes the path /webhooks/pucomex/
