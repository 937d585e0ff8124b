"""Events as the simulated Portal sends them, and the situation Duimp events leave each Duimp in.

``pucomex_body`` is the body of an emitted PUCOMEX event: the production shape for the Portal's
published Duimp events, ``{"evento", "dataHora", "dados"}`` for the Sefaz events, which have no
published shape (DESIGN.md).

The Portal names the Duimp events of private parties ``dimp-registro-import``,
``dimp-retifica-import``, ``dimp-situacao-import`` and ``dimp-diag-import``, with a body like::

    {"identificacao": {"numero": "26BR00000000198", "versao": 2},
     "situacaoDuimp": "DESEMBARACADA_AGUARDANDO_ENTREGA_CARGA", "canal": "VERDE",
     "dataEvento": "2026-11-30T10:15:00-03:00", "message": "..."}

``production_body`` builds it from the ``dados`` an emit is given (``numero``, ``versao`` and,
optionally, ``situacaoDuimp``, ``canal``, ``message``). Every Duimp event emitted (these, or the
Sefaz ones ``duimp.*`` in the older ``{evento, dataHora, dados}`` shape) updates a row of
``dispatch_duimp_situations`` in the transaction that stores it (``duimp_situation`` reads it
back), so the simulated consultation (``receiver.simulator.portal_api``) answers the situation
the events so far gave that Duimp: a cleared Duimp is not ``REGISTRADA``. The Sefaz events carry
no situation; the one they imply here is the simulator's choice.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from receiver.dispatcher.tables import DUIMP_SITUATIONS

PUBLISHED_DUIMP_EVENTS = (
    "dimp-diag-import",
    "dimp-registro-import",
    "dimp-retifica-import",
    "dimp-situacao-import",
)
# The situation an event leaves the Duimp in when its body does not say (None: unchanged).
IMPLIED_SITUATION: Mapping[str, str | None] = {
    "dimp-registro-import": "REGISTRADA_AGUARDANDO_CANAL",
    "dimp-retifica-import": None,
    "dimp-situacao-import": "DESEMBARACADA_AGUARDANDO_ENTREGA_CARGA",
    "dimp-diag-import": None,
    "duimp.registro": "REGISTRADA_AGUARDANDO_CANAL",
    "duimp.retificacao": None,
    "duimp.entrega-com-prosseguimento": "ENTREGA_ANTECIPADA_CARGA_ENTREGUE",
    "duimp.entrega-sem-prosseguimento": "ENTREGA_ANTECIPADA_CARGA_ENTREGUE",
    "duimp.desembaraco": "DESEMBARACADA_AGUARDANDO_ENTREGA_CARGA",
    "duimp.cancelamento": "CANCELADA",
}
_MESSAGES: Mapping[str, str] = {
    "dimp-registro-import": "Duimp {numero} registrada",
    "dimp-retifica-import": "Duimp {numero} retificada (versão {versao})",
    "dimp-situacao-import": "Duimp {numero}: {situacao}",
    "dimp-diag-import": "Diagnóstico da Duimp {numero} disponível",
}


def pucomex_body(evento: str, dados: Mapping[str, Any], data_hora: datetime) -> bytes:
    """The body the simulator sends for a PUCOMEX event (DESIGN.md): the production shape for the
    Portal's published Duimp events (``identificacao``, ``situacaoDuimp``...), else ``{evento,
    dataHora, dados}`` for the Sefaz events that have no published shape."""
    document: dict[str, Any]
    if evento in PUBLISHED_DUIMP_EVENTS:
        document = production_body(evento, dados, data_hora)
    else:
        document = {"evento": evento, "dataHora": data_hora.isoformat(), "dados": dict(dados)}
    try:
        return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate has no UTF-8 form; its JSON escape is still valid JSON.
        return json.dumps(document, separators=(",", ":")).encode("ascii")


def _version(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value.strip())
    return None


def production_body(evento: str, dados: Mapping[str, Any], moment: datetime) -> dict[str, Any]:
    """The Portal's body for a published Duimp event, from an emit's ``dados``."""
    numero = str(dados.get("numero", ""))
    versao = _version(dados.get("versao"))
    situacao = dados.get("situacaoDuimp") or IMPLIED_SITUATION.get(evento)
    body: dict[str, Any] = {"identificacao": {"numero": numero, "versao": versao}}
    if situacao is not None:
        body["situacaoDuimp"] = situacao
    if dados.get("canal") is not None:
        body["canal"] = dados["canal"]
    body["dataEvento"] = moment.isoformat()
    template = _MESSAGES.get(evento, "Duimp {numero}")
    body["message"] = dados.get("message") or template.format(
        numero=numero, versao=versao, situacao=situacao
    )
    return body


@dataclass(frozen=True, slots=True)
class SituationChange:
    numero: str
    versao: int | None
    situacao: str | None
    canal: str | None


def situation_change(evento: str, body: bytes) -> SituationChange | None:
    """What a Duimp event says about its Duimp; None for other events or unreadable bodies."""
    if evento not in IMPLIED_SITUATION:
        return None
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(payload, dict):
        return None
    ident = payload.get("identificacao")
    if not isinstance(ident, dict):
        ident = payload.get("dados")
    if not isinstance(ident, dict) or not isinstance(ident.get("numero"), str):
        return None
    situacao = payload.get("situacaoDuimp") or IMPLIED_SITUATION[evento]
    canal = payload.get("canal")
    return SituationChange(
        numero=ident["numero"][:20],
        versao=_version(ident.get("versao")),
        situacao=str(situacao)[:60] if situacao else None,
        canal=str(canal)[:20] if isinstance(canal, str) else None,
    )


def record_situations(conn: Connection, changes: Sequence[SituationChange], now: datetime) -> None:
    """Apply the changes in order inside the caller's transaction; what a change leaves out is
    kept, and a version never goes back."""
    latest: dict[str, dict[str, Any]] = {}
    numbers = sorted({change.numero for change in changes})
    if not numbers:
        return
    for found in conn.execute(
        select(DUIMP_SITUATIONS).where(DUIMP_SITUATIONS.c.numero.in_(numbers))
    ).mappings():
        latest[found["numero"]] = dict(found)
    for change in changes:
        row = latest.setdefault(
            change.numero,
            {"numero": change.numero, "versao": None, "situacao": None, "canal": None},
        )
        if change.versao is not None:
            row["versao"] = max(change.versao, row["versao"] or 0)
        row["situacao"] = change.situacao or row["situacao"]
        row["canal"] = change.canal or row["canal"]
        row["updated_at"] = now
    rows = [latest[numero] for numero in sorted({c.numero for c in changes})]
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(DUIMP_SITUATIONS)
    statement = statement.on_conflict_do_update(
        index_elements=["numero"],
        set_={
            name: statement.excluded[name] for name in ("versao", "situacao", "canal", "updated_at")
        },
    )
    conn.execute(statement, rows)


def duimp_situation(engine: Engine, numero: str) -> SituationChange | None:
    """The situation the emitted events gave Duimp ``numero``, if any."""
    with engine.connect() as conn:
        row = (
            conn.execute(select(DUIMP_SITUATIONS).where(DUIMP_SITUATIONS.c.numero == numero))
            .mappings()
            .first()
        )
    if row is None:
        return None
    return SituationChange(row["numero"], row["versao"], row["situacao"], row["canal"])
