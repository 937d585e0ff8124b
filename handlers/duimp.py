"""Reference handlers: when a Duimp is registered or rectified, fetch it from the Portal and keep
it; when its situation changes (channel, clearance, delivery) or a diagnosis comes, keep that with
what the Portal answers about the Duimp now.

The Portal names the event in the ``event-type`` header with its published ids
(``dimp-registro-import``, ``dimp-retifica-import``, ``dimp-situacao-import``,
``dimp-diag-import``) and sends a body like::

    {"identificacao": {"numero": "26BR00000000198", "versao": 2},
     "situacaoDuimp": "DESEMBARACADA_AGUARDANDO_ENTREGA_CARGA", "canal": "VERDE",
     "dataEvento": "2026-11-30T10:15:00-03:00", "message": "..."}

The earlier ids of the Sefaz events (``duimp.registro``...) with ``{"evento", "dataHora",
"dados": {"numero", "versao"}}`` still work. The notification only says that something happened
(it is told not to carry sensitive data); the Duimp itself comes from the Portal API, over mutual
TLS, through ``ctx.portal``. Copy this module, change what you do with the Duimp, and list it
under ``handlers:``.
"""

from __future__ import annotations

from receiver import Context, DuimpEvent, Notification, Router

router = Router()

REGISTRATION_EVENTS = (
    "dimp-registro-import",
    "dimp-retifica-import",
    "duimp.registro",
    "duimp.retificacao",
)
SITUATION_EVENTS = (
    "dimp-situacao-import",
    "dimp-diag-import",
    "duimp.entrega-com-prosseguimento",
    "duimp.entrega-sem-prosseguimento",
    "duimp.desembaraco",
    "duimp.cancelamento",
)


def duimp_reference(event: DuimpEvent) -> tuple[str, str | None]:
    """``numero`` and ``versao`` (None when the notification does not say). The Portal's shape
    and the earlier ``dados`` one arrive as the same ``DuimpEvent``: the body was validated when
    it was routed, and one without ``identificacao.numero`` was quarantined, never passed here."""
    ident = event.identificacao
    return ident.numero, None if ident.versao is None else str(ident.versao)


@router.on("pucomex", *REGISTRATION_EVENTS, needs=("portal",))
async def fetch_duimp(note: Notification, ctx: Context) -> None:
    numero, versao = duimp_reference(note.parsed_as(DuimpEvent))
    # Connection errors and 5xx are retried inside the client; if it still fails, the exception
    # makes the worker retry this handler later, with backoff. Without a version the client asks
    # the Portal for the Duimp's versions first and takes the latest.
    duimp = await ctx.portal.duimp(numero, versao)
    versao = versao or str(duimp.get("versaoDeclaracao") or "")
    # Keyed by number and version: a replay or a repeated notification overwrites, never doubles.
    await ctx.save("duimp", key=f"{numero}:{versao}", value=duimp)
    ctx.logger.info(
        "kept Duimp %s version %s (%s)", numero, versao, duimp.get("situacaoDeclaracao")
    )


@router.on("pucomex", *SITUATION_EVENTS, needs=("portal",))
async def track_situation(note: Notification, ctx: Context) -> None:
    event = note.parsed_as(DuimpEvent)
    numero, versao = duimp_reference(event)
    duimp = await ctx.portal.duimp(numero, versao)
    # One entry per notification (its idempotency key), so a re-run replaces rather than adds.
    await ctx.save(
        "duimp-situacao",
        key=note.idempotency_key,
        value={
            "numero": numero,
            "versao": versao or str(duimp.get("versaoDeclaracao") or ""),
            "evento": note.event,
            # What the notification says, when it says it (the Portal's shape), else what the
            # consultation answers now.
            "situacao": event.situacaoDuimp or duimp.get("situacaoDeclaracao"),
            "situacaoConsultada": duimp.get("situacaoDeclaracao"),
            "canal": event.canal,
            "dataEvento": event.dataEvento,
            "mensagem": event.message,
            "recebido": note.received_at.isoformat(),
        },
    )
