"""Routing by the Portal's event ids: aliases from receiver.yaml, the stored event column, and
notifications whose event-type is no id, against real stores."""

from __future__ import annotations

import json

import pytest

from receiver import Context, Notification, Router
from receiver.sources import dedup_key
from receiver.store import Incoming, Store
from receiver.worker import planner
from receiver.worker.routing import Routing

PRODUCTION_BODY = json.dumps(
    {
        "identificacao": {"numero": "26BR00000000198", "versao": 2},
        "situacaoDuimp": "REGISTRADA_AGUARDANDO_CANAL",
        "canal": "VERDE",
        "dataEvento": "2026-11-30T10:15:00-03:00",
        "message": "Duimp registrada",
    }
).encode()


def _incoming(body: bytes, event: str | None, headers: dict[str, str]) -> Incoming:
    return Incoming("pucomex", event, "161.148.1.2", headers, body, dedup_key("pucomex", body))


async def _noop(note: Notification, ctx: Context) -> None:
    pass


def _routing(**aliases: str) -> Routing:
    router = Router()
    router.on("pucomex", "duimp.registro", "dimp-situacao-import")(_noop)
    return Routing([router], ["pucomex"], aliases={"pucomex": aliases})


def test_an_alias_is_routed_and_stored_as_its_target(store: Store) -> None:
    # The Portal publishes an id for the Sefaz's registration later: a line in receiver.yaml.
    routing = _routing(**{"sefaz-registro-duimp": "duimp.registro"})
    [receipt] = store.append_now(
        [_incoming(PRODUCTION_BODY, "sefaz-registro-duimp", {"event-type": "sefaz-registro-duimp"})]
    )
    assert planner.plan(store, routing) == 1
    row = store.note(receipt.id)
    assert row is not None
    assert (row["status"], row["event"]) == ("pending", "duimp.registro")
    assert json.loads(row["headers"])["event-type"] == "sefaz-registro-duimp"
    assert [job["handler"] for job in store.jobs_of(receipt.id)] == [
        "tests.integration.worker.test_event_routing._noop"
    ]


def test_without_the_alias_the_same_notification_is_quarantined(store: Store) -> None:
    [receipt] = store.append_now([_incoming(PRODUCTION_BODY, "sefaz-registro-duimp", {})])
    planner.plan(store, _routing())
    row = store.note(receipt.id)
    assert row is not None and row["status"] == "quarantined"
    assert "no handler for pucomex event 'sefaz-registro-duimp'" in row["error"]


def test_a_published_id_is_routed_as_itself(store: Store) -> None:
    [receipt] = store.append_now([_incoming(PRODUCTION_BODY, "dimp-situacao-import", {})])
    planner.plan(store, _routing())
    row = store.note(receipt.id)
    assert row is not None and (row["status"], row["event"]) == ("pending", "dimp-situacao-import")


def test_an_event_type_that_named_no_id_quarantines_with_the_reason(store: Store) -> None:
    # Ingest kept the header and stored no event: the production body names none either.
    [receipt] = store.append_now(
        [_incoming(PRODUCTION_BODY, None, {"event-type": "dimp situacao import"})]
    )
    planner.plan(store, _routing())
    row = store.note(receipt.id)
    assert row is not None and row["status"] == "quarantined"
    assert "no event-type header with an event id" in row["error"]


def test_an_event_type_that_named_no_id_falls_back_to_the_body(store: Store) -> None:
    body = json.dumps({"evento": "duimp.registro", "dados": {"numero": "1"}}).encode()
    [receipt] = store.append_now([_incoming(body, None, {"event-type": "?"})])
    planner.plan(store, _routing())
    row = store.note(receipt.id)
    assert row is not None and (row["status"], row["event"]) == ("pending", "duimp.registro")


@pytest.mark.parametrize("strict", [False, True])
def test_an_alias_to_an_unknown_id_is_reported(
    strict: bool, caplog: pytest.LogCaptureFixture
) -> None:
    from receiver.errors import HandlerError

    if strict:
        with pytest.raises(HandlerError, match="not in the pucomex catalog"):
            Routing([], ["pucomex"], strict=True, aliases={"pucomex": {"a-b": "duimp.nada"}})
    else:
        Routing([], ["pucomex"], aliases={"pucomex": {"a-b": "duimp.nada"}})
        assert "maps to 'duimp.nada', which is not in the pucomex catalog" in caplog.text


def test_a_handler_on_an_alias_would_never_run_and_is_refused() -> None:
    from receiver.errors import HandlerError

    router = Router()
    router.on("pucomex", "sefaz-registro-duimp")(_noop)
    with pytest.raises(HandlerError, match=r"register the handler on 'duimp\.registro'"):
        Routing(
            [router], ["pucomex"], aliases={"pucomex": {"sefaz-registro-duimp": "duimp.registro"}}
        )


def test_aliases_of_an_unconfigured_source_are_refused() -> None:
    from receiver.errors import HandlerError

    with pytest.raises(HandlerError, match="names source 'erp'"):
        Routing([], ["pucomex"], aliases={"erp": {"a": "b"}})
