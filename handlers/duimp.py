"""Reference handlers: when a Duimp is registered or rectified, fetch it from the Portal and keep
it; when it moves on (delivery authorised, cleared, cancelled), keep its new situation.

The Portal's notification says only that something happened (it is told not to carry sensitive
data); the Duimp itself comes from the Portal API, over mutual TLS, through ``ctx.portal``.
Copy this module, change what you do with the Duimp, and list it under ``handlers:``.
"""

from __future__ import annotations

from typing import Any

from receiver import Context, Notification, Router

router = Router()


def duimp_reference(payload: Any) -> tuple[str, str]:
    """``numero`` and ``versao`` from the notification body ``{"evento", "dataHora", "dados"}``."""
    dados = payload.get("dados") if isinstance(payload, dict) else None
    if not isinstance(dados, dict) or not dados.get("numero") or dados.get("versao") is None:
        # Not worth retrying: the same body will never carry them. The worker keeps it as failed.
        raise ValueError("Duimp notification without dados.numero and dados.versao")
    return str(dados["numero"]), str(dados["versao"])


@router.on("pucomex", "duimp.registro", "duimp.retificacao")
async def fetch_duimp(note: Notification, ctx: Context) -> None:
    numero, versao = duimp_reference(note.payload)
    # Connection errors and 5xx are retried inside the client; if it still fails, the exception
    # makes the worker retry this handler later, with backoff.
    duimp = await ctx.portal.duimp(numero, versao)
    # Keyed by number and version: a replay or a repeated notification overwrites, never doubles.
    await ctx.save("duimp", key=f"{numero}:{versao}", value=duimp)
    ctx.logger.info(
        "kept Duimp %s version %s (%s)", numero, versao, duimp.get("situacaoDeclaracao")
    )


@router.on(
    "pucomex",
    "duimp.entrega-com-prosseguimento",
    "duimp.entrega-sem-prosseguimento",
    "duimp.desembaraco",
    "duimp.cancelamento",
)
async def track_situation(note: Notification, ctx: Context) -> None:
    numero, versao = duimp_reference(note.payload)
    duimp = await ctx.portal.duimp(numero, versao)
    # One entry per notification (its idempotency key), so a re-run replaces rather than adds.
    await ctx.save(
        "duimp-situacao",
        key=note.idempotency_key,
        value={
            "numero": numero,
            "versao": versao,
            "evento": note.event,
            "situacao": duimp.get("situacaoDeclaracao"),
            "recebido": note.received_at.isoformat(),
        },
    )
