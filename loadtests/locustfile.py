"""Portal bursts against a running receiver: the Portal, SINtegre, InvoiCy, and some bad traffic.

    PUCOMEX_CHAVE_SECRETA=... SINTEGRE_PASSWORD=... \\
    locust -f loadtests/locustfile.py --headless -u 64 -r 64 -t 30s --host http://127.0.0.1:8000

The run follows ``PortalBurst``: a quiet rate (a few users, about one notification a second
each), then ``-u`` users sending as fast as they are answered (thousands of notifications within
seconds, as after a batch of Duimp registrations), then quiet again; it stops by itself after
``-t`` (30 s when not given). Every answer is checked, and a wrong one is a failure: a 200 must
carry a 26-character id and the right ``duplicate`` flag, a wrong secret must get 401 with
``WWW-Authenticate``, an unknown source 404, an oversized body 413. A 503 is a failure too.

The receiver must admit this machine's address for every source (``examples/allowlist.local.yaml``
does for 127.0.0.1). Environment:

- ``PUCOMEX_CHAVE_SECRETA`` (required): the Portal's chaveSecreta, sent as it sends it, in a
  ``secret`` header beside ``event-type`` (the receiver's ``{type: header, name: secret}``).
- ``SINTEGRE_USER`` (default ``ons``) and ``SINTEGRE_PASSWORD`` for Basic, or ``SINTEGRE_TOKEN``
  for Bearer; without either, SINtegre sends no credentials (for a receiver configured without).
- ``INVOICY_TOKEN``: Bearer token for InvoiCy, if the receiver asks for one (the example does not).
- ``RECEIVER_MAX_BODY_BYTES`` (default 1048576): the receiver's ``max_body_bytes``, for the 413.
- ``LOCUST_HOST`` may replace ``--host``.

One locust process on a small machine cannot saturate the receiver; for throughput figures use
``python -m loadtests.bench``. This file is for realistic mixes, bursts and answer checking.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import random
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from locust import LoadTestShape, between, events, task
from locust.contrib.fasthttp import FastHttpUser

PUCOMEX_CHAVE_SECRETA = os.environ.get("PUCOMEX_CHAVE_SECRETA", "")
SINTEGRE_USER = os.environ.get("SINTEGRE_USER", "ons")
SINTEGRE_PASSWORD = os.environ.get("SINTEGRE_PASSWORD", "")
SINTEGRE_TOKEN = os.environ.get("SINTEGRE_TOKEN", "")
INVOICY_TOKEN = os.environ.get("INVOICY_TOKEN", "")
MAX_BODY_BYTES = int(os.environ.get("RECEIVER_MAX_BODY_BYTES", "1048576"))

QUIET_WAIT = (0.5, 1.5)  # seconds between notifications of one user when the Portal is quiet
BODY_BYTES = 1024

# DESIGN.md's catalog (seed pucomex-proposta-sefaz.txt), weighted the way a Sefaz sees them: every
# Duimp is registered and cleared, fewer are rectified, handed over or cancelled.
PUCOMEX_MIX: list[tuple[str, int]] = [
    # The Portal's published Duimp ids, in its production body shape.
    ("dimp-registro-import", 30),
    ("dimp-situacao-import", 40),
    ("dimp-retifica-import", 6),
    ("dimp-diag-import", 4),
    ("duimp.registro", 30),
    ("duimp.desembaraco", 20),
    ("duimp.entrega-com-prosseguimento", 6),
    ("duimp.entrega-sem-prosseguimento", 4),
    ("duimp.retificacao", 8),
    ("duimp.cancelamento", 2),
    ("pcce.icms-solicitacao", 10),
    ("pcce.icms-cancelamento", 1),
    ("anexacao.documentos-disponiveis", 4),
    ("lpco.registro", 3),
    ("lpco.vinculo-inclusao", 2),
    ("lpco.vinculo-cancelamento", 1),
    ("lpco.situacao-importador", 1),
    ("lpco.situacao-anuente", 2),
    ("lpco.exigencia-inclusao", 1),
    ("lpco.retificacao-resultado", 1),
    ("lpco.prorrogacao-resultado", 1),
    ("lpco.retificacao-solicitacao", 1),
    ("lpco.prorrogacao-solicitacao", 1),
    ("lpco.exigencia-resposta", 1),
    ("lpco.pendencia-due-averbada", 1),
]
PUCOMEX_EVENTS = [name for name, _ in PUCOMEX_MIX]
PUCOMEX_WEIGHTS = [weight for _, weight in PUCOMEX_MIX]

# Seed invoicy-webhook-cadastro.txt: module and notification-type codes.
INVOICY_MIX: list[tuple[int, int, int]] = [
    (1, 7, 30),  # NF-e authorised by the Sefaz
    (1, 2, 10),  # NF-e status update
    (1, 3, 5),  # NF-e event
    (2, 7, 20),  # NFC-e authorised
    (4, 1, 10),  # NFS-e issued
    (12, 2, 3),  # GNRE status update
    (1, 11, 3),  # new document found
    (14, 8, 1),  # certificate about to expire
]

SINTEGRE_PRODUCTS = [
    ("Carga Horária Verificada", "Programação da Operação", "Operação", "Diária"),
    ("Previsão de Vazões Semanal", "Planejamento Hidrológico", "Planejamento", "Semanal"),
    ("Deck de Preços DECOMP", "Programação Mensal", "Planejamento", "Mensal"),
    ("Intercâmbios entre Subsistemas", "Pós-Operação", "Operação", "Diária"),
    ("Geração Eólica Verificada", "Pós-Operação", "Operação", "Diária"),
]

_serial = itertools.count(1)


def _unique() -> str:
    """Unique across users and locust processes: no notification is an accidental repeat."""
    return f"{uuid.uuid4().hex[:12]}{next(_serial):08d}"


def _now() -> str:
    return datetime.now(UTC).astimezone().isoformat(timespec="seconds")


def pucomex_body(event: str) -> bytes:
    """A Portal notification: the production shape for the published Duimp ids, else about
    1 KiB of ``{"evento", "dataHora", "dados": {...}}``."""
    serial = _unique()
    if event.startswith("dimp-"):
        situacao = random.choice(["REGISTRADA_AGUARDANDO_CANAL", "DESEMBARACADA_CARGA_ENTREGUE"])
        return json.dumps(
            {
                "identificacao": {"numero": f"26BR{serial[-11:]}", "versao": random.randint(1, 4)},
                "situacaoDuimp": situacao,
                "canal": random.choice(["VERDE", "AMARELO", "VERMELHO", "CINZA"]),
                "dataEvento": _now(),
                "message": f"Duimp 26BR{serial[-11:]}: {situacao}",
            },
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()
    dados: dict[str, Any] = {
        "numero": f"26BR{serial[-10:]}",
        "versao": random.randint(1, 4),
    }
    if event.startswith("lpco."):
        dados = {
            "numero": f"I26{serial[-8:]}",
            "versao": random.randint(1, 3),
            "orgaoAnuente": random.choice(["MAPA", "ANVISA", "INMETRO", "IBAMA"]),
            "situacao": random.choice(["PARA_ANALISE", "DEFERIDO", "EM_EXIGENCIA"]),
            "operacao": {"duimp": f"26BR{serial[-10:]}", "item": random.randint(1, 40)},
        }
    dados.update(
        {
            "situacao": dados.get("situacao", "REGISTRADA"),
            "importador": {"ni": "12345678000190", "nome": "Importadora Exemplo Ltda"},
            "unidadeDespacho": {"codigo": "0817600", "nome": "Porto de Santos"},
            "recintoAduaneiro": "8911101",
            "canal": random.choice(["VERDE", "AMARELO", "VERMELHO"]),
            "ufImportador": random.choice(["SP", "SC", "PR", "RJ", "MG"]),
            "chave": serial,
        }
    )
    body = {"evento": event, "dataHora": _now(), "dados": dados}
    raw = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    # Free text pads every body to about 1 KiB, like a Portal message with its items' remarks.
    pad = max(0, BODY_BYTES - len(raw.encode()) - len(',"observacao":""'))
    dados["observacao"] = ("Mercadoria conforme declarado na Duimp. " * 40)[:pad]
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def sintegre_body() -> bytes:
    nome, processo, macro, periodicidade = random.choice(SINTEGRE_PRODUCTS)
    start = datetime(2026, random.randint(1, 12), 1, tzinfo=UTC)
    end = start + timedelta(days=27, hours=23, minutes=59, seconds=59)
    serial = _unique()
    return json.dumps(
        {
            "Nome": nome,
            "Processo": processo,
            "MacroProcesso": macro,
            "DataProduto": _now(),
            "Periodicidade": start.isoformat(),
            "PeriodicidadeFinal": end.isoformat(),
            "Uri": f"https://sintegre.ons.org.br/sites/9/13/Produtos/{serial}/{periodicidade}.zip",
        },
        ensure_ascii=False,
    ).encode()


def invoicy_body() -> bytes:
    module, kind, _ = random.choices(INVOICY_MIX, weights=[w for *_, w in INVOICY_MIX])[0]
    serial = _unique()
    return json.dumps(
        {
            "Modulo": module,
            "TipoNotificacao": kind,
            "EmpCNPJ": "12345678000190",
            "ChaveAcesso": f"3526{serial[-12:]:0>12}55001" + f"{random.randint(0, 10**23):023d}",
            "Numero": random.randint(1, 999999),
            "Serie": 1,
            "Situacao": "Autorizado",
            "DataHora": _now(),
            "Protocolo": f"1352600{random.randint(0, 10**8):08d}",
        }
    ).encode()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


class Sender(FastHttpUser):
    """Common ground: the quiet/burst pace and the checks of a 200."""

    abstract = True
    headers: dict[str, str] = {}

    def wait_time(self) -> float:
        runner = self.environment.runner
        if runner is not None and runner.user_count > PortalBurst.quiet_users():
            return 0.0  # the burst: send again as soon as answered
        return random.uniform(*QUIET_WAIT)

    def deliver(self, path: str, body: bytes, name: str, duplicate: bool = False) -> str | None:
        """POST a notification; a failure unless 200 with an id and the expected flag."""
        headers = {**self.headers, "Content-Type": "application/json"}
        with self.client.post(
            path,
            data=body,  # type: ignore[arg-type]  # bytes are sent as they are (documented)
            headers=headers,
            name=name,
            catch_response=True,
        ) as answer:
            if answer.status_code != 200:
                answer.failure(f"expected 200, got {answer.status_code}: {answer.text[:120]!r}")
                return None
            try:
                reply = json.loads(answer.content or b"")
                note_id = reply["id"]
                flag = reply["duplicate"]
            except (ValueError, KeyError, TypeError):
                answer.failure(f"200 without an id and duplicate flag: {answer.text[:120]!r}")
                return None
            if not isinstance(note_id, str) or len(note_id) != 26:
                answer.failure(f"200 with a malformed id {note_id!r}")
                return None
            if flag is not duplicate:
                answer.failure(f"duplicate is {flag}, expected {duplicate}")
                return None
            answer.success()
            return note_id


class Portal(Sender):
    """PUCOMEX as the Portal sends: the secret header, the event in event-type, no Authorization,
    DESIGN's event mix, and now and then a retry of the same body."""

    weight = 10

    def on_start(self) -> None:
        self.headers = {"secret": PUCOMEX_CHAVE_SECRETA, "event-type": "dimp-registro-import"}
        self.last: bytes | None = None

    @task(50)
    def notify(self) -> None:
        event = random.choices(PUCOMEX_EVENTS, weights=PUCOMEX_WEIGHTS)[0]
        body = pucomex_body(event)
        self.headers["event-type"] = event
        if self.deliver("/webhooks/pucomex", body, "pucomex"):
            self.last = body

    @task(1)
    def retry(self) -> None:
        """The Portal retries when it missed our answer: same bytes, so a receipt."""
        if self.last is not None:
            self.deliver("/webhooks/pucomex", self.last, "pucomex (retry)", duplicate=True)


class Sintegre(Sender):
    """SINtegre (ONS): one event, product published; Basic credentials (or a token)."""

    weight = 2

    def on_start(self) -> None:
        if SINTEGRE_PASSWORD:
            self.headers = {"Authorization": basic(SINTEGRE_USER, SINTEGRE_PASSWORD)}
        elif SINTEGRE_TOKEN:
            self.headers = {"Authorization": f"Bearer {SINTEGRE_TOKEN}"}

    @task
    def notify(self) -> None:
        self.deliver("/webhooks/sintegre", sintegre_body(), "sintegre")


class Invoicy(Sender):
    """InvoiCy: module and notification-type codes; Bearer only when a token is given."""

    weight = 2

    def on_start(self) -> None:
        if INVOICY_TOKEN:
            self.headers = {"Authorization": f"Bearer {INVOICY_TOKEN}"}

    @task
    def notify(self) -> None:
        self.deliver("/webhooks/invoicy", invoicy_body(), "invoicy")


class Intruder(FastHttpUser):
    """Bad traffic at its own modest pace, also during the burst; every answer is checked."""

    weight = 1
    wait_time = between(0.2, 0.6)

    def expect(
        self, status: int, path: str, body: bytes, headers: dict[str, str], name: str
    ) -> None:
        with self.client.post(
            path,
            data=body,  # type: ignore[arg-type]  # bytes are sent as they are (documented)
            headers=headers,
            name=name,
            catch_response=True,
        ) as answer:
            if answer.status_code != status:
                answer.failure(f"expected {status}, got {answer.status_code}")
            elif status == 401 and "www-authenticate" not in {k.lower() for k in answer.headers}:
                answer.failure("401 without WWW-Authenticate")
            else:
                answer.success()

    @task(4)
    def wrong_secret(self) -> None:
        headers = {"secret": f"wrong-{uuid.uuid4().hex}", "event-type": "dimp-registro-import"}
        body = pucomex_body("dimp-registro-import")
        self.expect(401, "/webhooks/pucomex", body, headers, "401 wrong secret")

    @task(2)
    def wrong_password(self) -> None:
        headers = {"Authorization": basic(SINTEGRE_USER, "not-the-password")}
        if not SINTEGRE_PASSWORD and not SINTEGRE_TOKEN:
            return  # a receiver without SINtegre credentials would rightly accept it
        self.expect(401, "/webhooks/sintegre", sintegre_body(), headers, "401 wrong password")

    @task(3)
    def unknown_source(self) -> None:
        headers = {"secret": PUCOMEX_CHAVE_SECRETA}
        self.expect(
            404,
            "/webhooks/siscomex-antigo",
            pucomex_body("duimp.registro"),
            headers,
            "404 unknown source",
        )

    @task(1)
    def oversized(self) -> None:
        headers = {"secret": PUCOMEX_CHAVE_SECRETA, "Content-Type": "application/json"}
        body = b'{"evento":"duimp.registro","dados":"' + b"x" * MAX_BODY_BYTES + b'"}'
        self.expect(413, "/webhooks/pucomex", body, headers, "413 oversized body")


class PortalBurst(LoadTestShape):
    """Quiet, then a burst of ``-u`` users sending as fast as they are answered, then quiet.

    Phases take 25 %, 40 % and 35 % of ``-t`` (30 s when not given); the test then stops.
    """

    use_common_options = True

    @staticmethod
    def quiet_users() -> int:
        return 4

    def tick(self) -> tuple[int, float] | None:
        options = self.runner.environment.parsed_options if self.runner else None
        total = float(getattr(options, "run_time", None) or 30)
        burst_users = int(getattr(options, "num_users", None) or 64)
        rate = float(getattr(options, "spawn_rate", None) or burst_users)
        now: float = self.get_run_time()  # type: ignore[no-untyped-call]
        quiet = min(self.quiet_users(), burst_users)
        if now < total * 0.25:
            return quiet, rate
        if now < total * 0.65:
            return burst_users, rate
        if now < total:
            return quiet, rate
        return None


@events.init.add_listener  # type: ignore[untyped-decorator]
def _check_setup(environment: Any, **_: Any) -> None:
    if not PUCOMEX_CHAVE_SECRETA:
        sys.stderr.write(
            "locustfile: set PUCOMEX_CHAVE_SECRETA to the receiver's pucomex `secret` header value\n"
        )
        sys.exit(2)
