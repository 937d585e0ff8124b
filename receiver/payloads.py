"""Typed events: the pydantic models of the catalog's payloads, and which event gets which.

A handler reads ``note.parsed`` (or ``note.parsed_as(DuimpEvent)`` for its type): the stored body,
validated once after the acknowledgement, when the worker routes the notification. A body that
does not fit its event's model is quarantined with the validation error (``receiver inbox show``
prints it) and never reaches handler code; ``receiver replay --quarantined`` routes it again once
the model or the sender is fixed.

The models keep what their sender sends beyond the fields named here (``extra="allow"``), and
require only what a handler cannot do without:

- ``DuimpEvent``: the Duimp events, published (``dimp-*-import``, the Portal's production shape
  ``{"identificacao": {"numero", "versao"}, "situacaoDuimp", "canal", "dataEvento", "message"}``)
  and the Sefaz ones (``duimp.*``, whose earlier shape ``{"evento", "dataHora", "dados":
  {"numero", "versao"}}`` is read into the same fields). ``identificacao.numero`` is required.
- ``SefazEvent``: the other Sefaz events of seed ``pucomex-proposta-sefaz.txt`` (``pcce.*``,
  ``anexacao.*``, ``lpco.*``), which have no published shape: ``{"evento", "dataHora", "dados"}``.
- ``PortalEvent``: the other published PUCOMEX ids (``cctr-*``, ``talp-*``, ``duex-historico``,
  ``catp-prod-desativado``), whose bodies the Portal does not document: any JSON object.
- ``SintegreProduct``: seed ``sintegre-webhook-guia.txt`` (``Nome`` and ``Uri``, or ``Url`` as
  ONS's example receivers read it; field names in any case).
- ``InvoicyNotification``: seed ``invoicy-webhook-cadastro.txt`` (``Modulo``, ``TipoNotificacao``
  and the document's fields, which vary by module).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from receiver.catalog import PUCOMEX_CATALOG

__all__ = [
    "DuimpEvent",
    "DuimpIdentificacao",
    "InvoicyNotification",
    "PayloadModel",
    "PortalEvent",
    "SefazEvent",
    "SintegreProduct",
    "ValidationError",
    "describe",
    "model_for",
    "validate_payload",
]


class PayloadModel(BaseModel):
    """The base of every payload model: frozen, and what the sender adds beyond it is kept."""

    model_config = ConfigDict(extra="allow", frozen=True)


class DuimpIdentificacao(PayloadModel):
    numero: str = Field(min_length=1, max_length=40)
    versao: int | None = None

    @field_validator("numero", mode="before")
    @classmethod
    def _numero_as_text(cls, value: Any) -> Any:
        # Seen as a number in hand-written tests; the Portal sends text ("26BR00000000198").
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("versao", mode="before")
    @classmethod
    def _empty_versao(cls, value: Any) -> Any:
        return None if value == "" else value


class DuimpEvent(PayloadModel):
    """A Duimp event: which Duimp (``identificacao``), and what the Portal says about it now."""

    identificacao: DuimpIdentificacao
    situacaoDuimp: str | None = None  # the Portal's field names
    canal: str | None = None
    dataEvento: str | None = None
    message: str | None = None
    evento: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _earlier_shape(cls, data: Any) -> Any:
        """``{"evento", "dataHora", "dados": {"numero", "versao"}}`` (the Sefaz events' shape,
        and the simulator's before issue 15) read into the production fields."""
        if isinstance(data, dict) and "identificacao" not in data and "dados" in data:
            converted = dict(data)
            converted["identificacao"] = data["dados"]
            converted.setdefault("dataEvento", data.get("dataHora"))
            return converted
        return data


class SefazEvent(PayloadModel):
    """A Sefaz event without a published shape: ``{"evento", "dataHora", "dados"}``."""

    evento: str | None = None
    dataHora: str | None = None
    dados: dict[str, Any] = Field(default_factory=dict)


class PortalEvent(PayloadModel):
    """A published PUCOMEX event whose body the Portal does not document: any JSON object, its
    fields as attributes (``model_extra``)."""


class SintegreProduct(PayloadModel):
    """A product SINtegre published. ``uri`` is the download link, from ``Uri`` or ``Url``."""

    Nome: str = Field(min_length=1)
    Processo: str | None = None
    MacroProcesso: str | None = None
    DataProduto: str | None = None
    Periodicidade: str | None = None
    PeriodicidadeFinal: str | None = None
    Uri: str | None = None
    Url: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _any_case(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        names = {name.lower(): name for name in cls.model_fields}
        return {names.get(str(key).lower(), key): value for key, value in data.items()}

    @model_validator(mode="after")
    def _a_link(self) -> SintegreProduct:
        if not (self.Uri or self.Url):
            raise ValueError("SINtegre product without Uri (or Url)")
        return self

    @property
    def uri(self) -> str:
        return self.Uri or self.Url or ""


class InvoicyNotification(PayloadModel):
    """An InvoiCy notification: its module and notification type codes (when the path does not
    name the event), and the document's fields, which vary by module (``model_extra``)."""

    Modulo: int | None = None
    TipoNotificacao: int | None = None


_DUIMP_EVENTS = frozenset(
    event for event in PUCOMEX_CATALOG if event.startswith(("dimp-", "duimp."))
)


def model_for(source: str, event: str) -> type[PayloadModel] | None:
    """The model of ``event``'s payload (an id of the catalog, after aliases); None for a source
    without a catalog."""
    if source == "pucomex":
        if event in _DUIMP_EVENTS:
            return DuimpEvent
        if event.startswith(("pcce.", "anexacao.", "lpco.")):
            return SefazEvent
        return PortalEvent
    if source == "sintegre":
        return SintegreProduct
    if source == "invoicy":
        return InvoicyNotification
    return None


def validate_payload(source: str, event: str, payload: Any) -> PayloadModel | None:
    """The payload as its model (None for a source without one); ``ValidationError`` when it does
    not fit."""
    model = model_for(source, event)
    if model is None:
        return None
    return model.model_validate(payload)


def describe(error: ValidationError) -> str:
    """A validation error in one line: each problem as ``field.path: message``."""
    problems = []
    for problem in error.errors(include_url=False):
        where = ".".join(str(part) for part in problem["loc"]) or "(body)"
        problems.append(f"{where}: {problem['msg']}")
    return f"does not fit {error.title}: " + "; ".join(problems)


def known_models() -> Mapping[str, type[PayloadModel]]:
    """Every model by name (for documentation and tests)."""
    return {
        model.__name__: model
        for model in (DuimpEvent, SefazEvent, PortalEvent, SintegreProduct, InvoicyNotification)
    }
