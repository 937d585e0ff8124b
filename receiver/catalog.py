"""The event catalogs: every event id each sender is known to use, what it means, and where the
id comes from.

An id's ``status`` says how far to trust it:

- ``published``: the sender names the event with this id (PUCOMEX's ``event-type`` header). The
  Duimp ids of private parties are on the Portal's official page
  "duimp_eventos_intervenientes_privados"; the others were read from receivers in production.
- ``provisional``: the project's id for an event the sender describes but has not named yet (the
  Sefaz events of seed ``pucomex-proposta-sefaz.txt``). When the Portal publishes an id for one,
  ``events.aliases`` in ``receiver.yaml`` maps it onto ours without a new release.
- ``derived``: the project's id made from codes the sender does publish (InvoiCy's module and
  notification type; SINtegre's single kind of notification).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum


class EventStatus(StrEnum):
    PUBLISHED = "published"
    PROVISIONAL = "provisional"
    DERIVED = "derived"


@dataclass(frozen=True, slots=True)
class EventEntry:
    id: str
    description: str
    status: EventStatus
    reference: str  # where the id and its meaning come from


_OFFICIAL_DUIMP = "Portal Único, official page duimp_eventos_intervenientes_privados"
_PRODUCTION = "Portal Único, read from receivers in production (2026)"
_SEED_SEFAZ = "seed pucomex-proposta-sefaz.txt (no published id yet)"


def _entries(
    status: EventStatus, reference: str, items: Mapping[str, str]
) -> dict[str, EventEntry]:
    return {id_: EventEntry(id_, text, status, reference) for id_, text in items.items()}


PUCOMEX_CATALOG: Mapping[str, EventEntry] = {
    **_entries(
        EventStatus.PUBLISHED,
        _OFFICIAL_DUIMP,
        {
            "dimp-diag-import": "Duimp de importação: diagnóstico",
            "dimp-registro-import": "Duimp de importação: registro",
            "dimp-retifica-import": "Duimp de importação: retificação",
            "dimp-situacao-import": "Duimp de importação: mudança de situação (canal, desembaraço, "
            "entrega)",
        },
    ),
    **_entries(
        EventStatus.PUBLISHED,
        _PRODUCTION,
        {
            "cctr-resultado-recepcao": "CCT: resultado da recepção de carga",
            "cctr-carga-liberada": "CCT: carga liberada",
            "cctr-carga-bloqueio": "CCT: bloqueio de carga",
            "cctr-canal-vermelho": "CCT: carga selecionada para canal vermelho",
            "talp-altsit-lpco-anu": "LPCO: alteração de situação pelo órgão anuente",
            "talp-inclusao-exig": "LPCO: inclusão de exigência",
            "talp-cancela-exig": "LPCO: cancelamento de exigência",
            "duex-historico": "DU-E: novo evento no histórico",
            "catp-prod-desativado": "Catálogo de Produtos: produto desativado",
        },
    ),
    **_entries(
        EventStatus.PROVISIONAL,
        _SEED_SEFAZ,
        {
            "duimp.registro": "Registro de Duimp",
            "duimp.retificacao": "Retificação de Duimp",
            "duimp.entrega-com-prosseguimento": "Autorização de Entrega com prosseguimento do "
            "Despacho",
            "duimp.entrega-sem-prosseguimento": "Autorização de Entrega sem prosseguimento do "
            "Despacho",
            "duimp.cancelamento": "Cancelamento de Duimp",
            "duimp.desembaraco": "Desembaraço de Duimp",
            "pcce.icms-solicitacao": "Solicitação de Cálculo do Pagamento ou Exoneração do ICMS",
            "pcce.icms-cancelamento": "Notificação de cancelamento de solicitação de ICMS",
            "anexacao.documentos-disponiveis": "Notificação da disponibilização de documentos "
            "para a Sefaz",
            "lpco.registro": "Registro de LPCO",
            "lpco.vinculo-inclusao": "Inclusão de vínculo de LPCO com operação",
            "lpco.vinculo-cancelamento": "Cancelamento de vínculo de LPCO com operação",
            "lpco.situacao-importador": "Alteração de situação do LPCO feita pelo "
            "exportador/importador",
            "lpco.situacao-anuente": "Alteração de situação do LPCO feita pelo órgão anuente",
            "lpco.exigencia-inclusao": "Inclusão de exigência no LPCO",
            "lpco.retificacao-resultado": "Resultado de análise de solicitação de retificação "
            "de LPCO",
            "lpco.prorrogacao-resultado": "Resultado de análise de solicitação de prorrogação "
            "de LPCO",
            "lpco.retificacao-solicitacao": "Inclusão de solicitação de retificação de LPCO",
            "lpco.prorrogacao-solicitacao": "Inclusão de solicitação de prorrogação de LPCO",
            "lpco.exigencia-resposta": "Resposta a exigência do LPCO",
            "lpco.pendencia-due-averbada": "Pendência de LPCO em DU-E averbada",
        },
    ),
}

SINTEGRE_CATALOG: Mapping[str, EventEntry] = _entries(
    EventStatus.DERIVED,
    "seed sintegre-webhook-guia.txt (one kind of notification)",
    {"produto.publicado": "Publicação de produto no SINtegre"},
)

# Seed invoicy-webhook-cadastro.txt: "Módulo" and "Tipo Notificação" codes.
INVOICY_MODULES: Mapping[int, str] = {1: "nfe", 2: "nfce", 4: "nfse", 12: "gnre", 14: "certificado"}
INVOICY_NOTIFICATION_TYPES: Mapping[int, str] = {
    1: "documento-emitido",
    2: "status-atualizado",
    3: "evento",
    4: "documento-recebido",
    5: "dados-atualizados",
    6: "documento-inutilizado",
    7: "documento-autorizado",
    8: "certificado-vencimento",
    9: "fila-consulta-inclusao",
    10: "novo-documento-nao-encontrado",
    11: "novo-documento-encontrado",
}
INVOICY_CATALOG: Mapping[str, EventEntry] = _entries(
    EventStatus.DERIVED,
    "seed invoicy-webhook-cadastro.txt (Módulo and Tipo Notificação codes)",
    {
        f"{module}.{kind}": f"InvoiCy módulo {mcode}, tipo de notificação {kcode}"
        for mcode, module in INVOICY_MODULES.items()
        for kcode, kind in INVOICY_NOTIFICATION_TYPES.items()
    },
)

CATALOGS: Mapping[str, Mapping[str, EventEntry]] = {
    "pucomex": PUCOMEX_CATALOG,
    "sintegre": SINTEGRE_CATALOG,
    "invoicy": INVOICY_CATALOG,
}


def is_known_event(source: str, event: str) -> bool | None:
    """True or False against the source's catalog; None for sources without one."""
    catalog = CATALOGS.get(source)
    if catalog is None:
        return None
    return event in catalog


def family_known(source: str, pattern: str) -> bool:
    """A ``family.*`` pattern matches some id of the source's catalog (or it has none)."""
    catalog = CATALOGS.get(source, {})
    return not catalog or any(event.startswith(pattern[:-1]) for event in catalog)


@dataclass(frozen=True, slots=True)
class CatalogRow:
    """One line of ``receiver events``: a catalog entry, or an alias from ``receiver.yaml``."""

    source: str
    id: str
    description: str
    status: str  # an EventStatus, or "alias"
    reference: str
    alias_of: str | None = None

    def public(self) -> dict[str, str | None]:
        return {
            "source": self.source,
            "id": self.id,
            "status": self.status,
            "alias_of": self.alias_of,
            "description": self.description,
            "reference": self.reference,
        }


def catalog_rows(
    aliases: Mapping[str, Mapping[str, str]], source: str | None = None
) -> Iterator[CatalogRow]:
    """Every catalog entry, then the configured aliases, source by source."""
    for name in sorted({*CATALOGS, *aliases}):
        if source is not None and name != source:
            continue
        for entry in CATALOGS.get(name, {}).values():
            yield CatalogRow(name, entry.id, entry.description, entry.status, entry.reference)
        for alias, target in sorted(aliases.get(name, {}).items()):
            known = CATALOGS.get(name, {}).get(target)
            description = known.description if known is not None else "(not in the catalog)"
            yield CatalogRow(
                name, alias, description, "alias", "receiver.yaml events.aliases", target
            )
