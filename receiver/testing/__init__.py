"""The handler developer's kit: test a handler as the worker runs it, without a server.

::

    from receiver.testing import FakePortal, MemoryResults, make_notification, run_handlers_sync
    from my_handlers import router

    def test_a_cleared_duimp_is_kept(receiver_payload):
        note = make_notification("pucomex", "dimp-situacao-import",
                                 payload=receiver_payload("dimp-situacao-import"))
        results = MemoryResults()
        [run] = run_handlers_sync(router, note, portal=FakePortal(), results=results)
        assert run.outcome == "done"

- ``make_notification``: a ``Notification`` as the worker builds it (keys, time, ``parsed``).
- ``FakePortal``: the Portal API in memory behind the real client; records calls, fails on demand.
- ``portal_simulator``: the real simulator in-process (``async with portal_simulator() as sim``).
- ``run_handlers`` (async) and ``run_handlers_sync``: the matching handlers, as the worker runs
  them; what each did (``HandlerRun``), or ``Quarantined``.
- ``MemoryResults``: ``ctx.save``/``ctx.load`` in memory, checked as the store checks them.
- ``payload(event)``: a payload of every catalog event of the three senders; the pytest plugin
  (installed with the package) gives it as the ``receiver_payload`` fixture, with
  ``fake_portal`` and ``memory_results``.
"""

from receiver.testing.fixtures import events, payload
from receiver.testing.notifications import make_notification
from receiver.testing.portal import FakePortal, PortalCall
from receiver.testing.runner import (
    HandlerRun,
    Quarantined,
    outcomes,
    run_handlers,
    run_handlers_sync,
)
from receiver.testing.simulator import Simulator, portal_simulator
from receiver.worker.memory import MemoryResults

__all__ = [
    "FakePortal",
    "HandlerRun",
    "MemoryResults",
    "PortalCall",
    "Quarantined",
    "Simulator",
    "events",
    "make_notification",
    "outcomes",
    "payload",
    "portal_simulator",
    "run_handlers",
    "run_handlers_sync",
]
