"""receiver.testing against the real simulator: ``portal_simulator()`` serves the Portal API under
mutual TLS in-process, and the reference handler run by ``run_handlers`` fetches through it the
Duimp in the situation the emitted events gave it."""

from __future__ import annotations

import pytest

import handlers.duimp
from receiver.testing import (
    MemoryResults,
    make_notification,
    outcomes,
    payload,
    portal_simulator,
    run_handlers,
)

pytestmark = pytest.mark.anyio


async def test_a_handler_fetches_from_the_real_simulator() -> None:
    body = payload("dimp-situacao-import")
    numero = body["identificacao"]["numero"]
    async with portal_simulator() as sim:
        # The event changes the simulated Duimp's situation, as the Portal's would.
        await sim.dispatcher.emit(
            "dimp-situacao-import",
            {"numero": numero, "versao": 2, "situacaoDuimp": "DESEMBARACADA_CARGA_ENTREGUE"},
        )
        note = make_notification("pucomex", "dimp-situacao-import", payload=body)
        results = MemoryResults()
        async with sim.client() as portal:
            runs = await run_handlers(handlers.duimp.router, note, portal=portal, results=results)
    assert outcomes(runs) == {"track_situation": "done"}
    kept = await results.load("duimp-situacao", note.idempotency_key)
    assert kept is not None
    assert kept["situacaoConsultada"] == "DESEMBARACADA_CARGA_ENTREGUE"
    assert kept["situacao"] == "DESEMBARACADA_AGUARDANDO_ENTREGA_CARGA"  # what the note said
    assert sim.folder.exists() is False  # the temporary folder is gone
