"""Reference handler: keep the status history of each InvoiCy document.

InvoiCy notifies every change of a document (authorised, cancelled, event, ...; seed
``invoicy-webhook-cadastro.txt``). This handler appends each notification to the history of its
document, keyed by the access key when there is one, so ``ctx.load("invoicy-document", key)``
gives the whole story. Appending is idempotent: a notification already in the history (a replay,
a resend) is not added again. InvoiCy's field names vary by module; adjust ``KEY_FIELDS`` and
``STATUS_FIELDS`` to yours.

The load-append-save is not atomic: two notifications of one document handled at the same
instant by two workers could drop one entry. If that matters to you, key each entry by its own
notification (``f"{key}:{note.idempotency_key}"``) and assemble the history when reading.
"""

from __future__ import annotations

from typing import Any

from receiver import Context, InvoicyNotification, Notification, Router

router = Router()

RESULT_KIND = "invoicy-document"
KEY_FIELDS = ("ChaveAcesso", "DocChaAcesso", "Chave", "DocChave", "Identificador")
STATUS_FIELDS = ("Situacao", "DocSitDescricao", "DocSitCodigo", "Status", "CodigoStatus")


def first_field(payload: Any, names: tuple[str, ...]) -> str | None:
    """The first of ``names`` present in the payload (case-insensitive), as text."""
    if not isinstance(payload, dict):
        return None
    fields = {str(key).lower(): value for key, value in payload.items()}
    for name in names:
        value = fields.get(name.lower())
        if value not in (None, ""):
            return str(value)
    return None


def document_key(payload: Any) -> str:
    key = first_field(payload, KEY_FIELDS)
    if key is None:
        number, series = first_field(payload, ("DocNumero",)), first_field(payload, ("DocSerie",))
        if number is None:
            raise ValueError(f"InvoiCy notification names no document (fields {KEY_FIELDS})")
        key = f"{series or '0'}-{number}"
    return key


@router.on_any("invoicy")
async def record_document_status(note: Notification, ctx: Context) -> None:
    # The document's fields vary by module: they are the notification's extra fields.
    fields = note.parsed_as(InvoicyNotification).model_dump()
    key = document_key(fields)
    history: list[dict[str, Any]] = list(await ctx.load(RESULT_KIND, key) or [])
    if any(entry.get("notification") == note.idempotency_key for entry in history):
        return  # already recorded: replays change nothing
    history.append(
        {
            "notification": note.idempotency_key,
            "event": note.event,
            "status": first_field(fields, STATUS_FIELDS) or note.event,
            "received_at": note.received_at.isoformat(),
        }
    )
    history.sort(key=lambda entry: str(entry["received_at"]))
    await ctx.save(RESULT_KIND, key=key, value=history)
    ctx.logger.info("InvoiCy document %s: %s", key, history[-1]["status"])
