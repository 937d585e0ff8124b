"""The durable store: what ingest commits, the inbox the worker reads, the results handlers keep.

Modules, from the bottom: ``tables`` (the inbox's tables and the alerts' two), ``migrate``
and ``schema`` (their history under alembic: ``receiver db upgrade``), ``engine`` (SQLAlchemy's engine for
SQLite or PostgreSQL, and the durability check), ``faults`` (the store failing, told apart from
one row it refuses), ``batch`` (a batch of notifications as one multi-row insert), ``writer``
(the writer's held connection, one transaction per batch, SQLite's WAL checkpoints),
``committer`` (the ``Committer`` protocol, ``Incoming`` and ``Receipt``), ``thread`` and
``process`` (the two committers), ``grouped`` (group commit for other writers on an event loop),
``facade`` (``Store``, the one object a process holds).

What other layers use is exported here, imported when first asked for: the writer process
(``python -m receiver.store.process``) imports this package on its way to its own modules, and
these brought the facade's settings (pydantic), alembic and the handler worker's tables into it.
"""

import typing as _typing

from receiver._lazy import lazy_exports as _lazy_exports

if _typing.TYPE_CHECKING:
    from receiver.store.committer import Committer, Incoming, Receipt
    from receiver.store.engine import make_engine, normalise_url
    from receiver.store.facade import NoteFilter, Store, received_since
    from receiver.store.faults import store_down
    from receiver.store.grouped import GroupedWrites
    from receiver.store.tables import (
        ALERT_CHECKS,
        ATTEMPTS,
        ATTENTION_STATUSES,
        AUDIT,
        EPISODES,
        JOBS,
        NEEDS_ATTENTION,
        NOTES,
        RECEIVER_TABLES,
        RECOVERY_RUNS,
        RESULTS,
        JobStatus,
        NoteStatus,
        UTCDateTime,
        utcnow,
    )

_LAZY = {
    **dict.fromkeys(["Committer", "Incoming", "Receipt"], "receiver.store.committer"),
    **dict.fromkeys(["make_engine", "normalise_url"], "receiver.store.engine"),
    **dict.fromkeys(["NoteFilter", "Store", "received_since"], "receiver.store.facade"),
    "store_down": "receiver.store.faults",
    "GroupedWrites": "receiver.store.grouped",
    **dict.fromkeys(
        [
            "ALERT_CHECKS",
            "ATTEMPTS",
            "ATTENTION_STATUSES",
            "AUDIT",
            "EPISODES",
            "JOBS",
            "NEEDS_ATTENTION",
            "NOTES",
            "RECEIVER_TABLES",
            "RECOVERY_RUNS",
            "RESULTS",
            "JobStatus",
            "NoteStatus",
            "UTCDateTime",
            "utcnow",
        ],
        "receiver.store.tables",
    ),
}


__getattr__, __dir__ = _lazy_exports(__name__, _LAZY)


__all__ = [
    "ALERT_CHECKS",
    "ATTEMPTS",
    "ATTENTION_STATUSES",
    "AUDIT",
    "EPISODES",
    "JOBS",
    "NEEDS_ATTENTION",
    "NOTES",
    "RECEIVER_TABLES",
    "RECOVERY_RUNS",
    "RESULTS",
    "Committer",
    "GroupedWrites",
    "Incoming",
    "JobStatus",
    "NoteFilter",
    "NoteStatus",
    "Receipt",
    "Store",
    "UTCDateTime",
    "make_engine",
    "normalise_url",
    "received_since",
    "store_down",
    "utcnow",
]
