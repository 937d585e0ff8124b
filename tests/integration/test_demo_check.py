"""The demo's verdict on kept Duimp records, read from a real SQLite store: it counts what each
handler kept for each emitted event, and a missing record lowers the count."""

from __future__ import annotations

from receiver.demo import REGISTRATION_EVENTS, _kept_duimps, demo_events
from receiver.dispatcher import pucomex_body
from receiver.inbox import Result, save_results
from receiver.models import utcnow
from receiver.sources import dedup_key
from receiver.store import Incoming, Store


def save_result(store: Store, kind: str, key: str, value: object) -> None:
    save_results(store, [Result.of(kind, key, value)])


def test_every_kept_record_is_counted_and_a_missing_one_is_not(sqlite_store: Store) -> None:
    events = demo_events(6)
    situations = [(e, d) for e, d in events if e not in REGISTRATION_EVENTS]
    assert len(situations) >= 2  # the mix has situations to find
    now = utcnow()
    stored = sqlite_store.append_now(
        [
            Incoming("pucomex", evento, "127.0.0.1", {}, body, dedup_key("pucomex", body))
            for evento, dados in events
            for body in [pucomex_body(evento, dados, now)]
        ]
    )
    # A repeat of the first situation, stored as a receipt: it must not count twice.
    evento, dados = situations[0]
    body = pucomex_body(evento, dados, now)
    sqlite_store.append_now(
        [Incoming("pucomex", evento, "127.0.0.1", {}, body, dedup_key("pucomex", body))]
    )
    assert len(stored) == len(events)

    skipped = situations[-1]
    for evento, dados in events:
        if evento in REGISTRATION_EVENTS:
            key = f"{dados['numero']}:{dados['versao']}"
            save_result(sqlite_store, "duimp", key, {"numeroDeclaracao": dados["numero"]})
        elif (evento, dados) != skipped:
            body = pucomex_body(evento, dados, now)
            save_result(
                sqlite_store, "duimp-situacao", dedup_key("pucomex", body), {"situacao": evento}
            )
    assert _kept_duimps(sqlite_store, events) == len(events) - 1

    evento, dados = skipped
    key = dedup_key("pucomex", pucomex_body(evento, dados, now))
    save_result(sqlite_store, "duimp-situacao", key, {"situacao": evento})
    assert _kept_duimps(sqlite_store, events) == len(events)
    # A registration record of another Duimp does not count for this one.
    first = events[0][1]
    save_result(
        sqlite_store, "duimp", f"{first['numero']}:{first['versao']}", {"numeroDeclaracao": "x"}
    )
    assert _kept_duimps(sqlite_store, events) == len(events) - 1
