"""The subscription API client: the seed's field rules, checked before anything is sent, and the
sync plan."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from receiver.config import PortalSettings, SubscriptionSpec
from receiver.errors import SubscriptionError
from receiver.portal import PortalClient, Subscription, plan_sync
from receiver.portal.subscriptions import check_endpoint, format_date

HOOK = "https://erp.example.com.br/webhooks/pucomex"


class Recorder:
    def __init__(self, answer: Any = None, code: int = 200) -> None:
        self.requests: list[httpx.Request] = []
        self.answer, self.code = answer, code

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/portal/api/autenticar":
            return httpx.Response(200, headers={"Set-Token": "Bearer t", "X-CSRF-Token": "c"})
        return httpx.Response(self.code, json=self.answer)

    def api_calls(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path != "/portal/api/autenticar"]


def call(recorder: Recorder, work: Callable[[Any], Any]) -> Any:
    async def go() -> Any:
        settings = PortalSettings(base_url="https://portal.test", max_retries=0)
        async with PortalClient(settings, transport=httpx.MockTransport(recorder.handle)) as c:
            return await work(c.subscriptions)

    return asyncio.run(go())


@pytest.mark.parametrize(
    ("evento", "endpoint", "message"),
    [
        ("duimp.registro", "http://erp.example.com.br/hook", "secure URL"),
        ("duimp.registro", "HTTP://erp.example.com.br/hook", "secure URL"),
        ("duimp.registro", "ftp://erp.example.com.br/hook", "secure URL"),
        ("duimp.registro", "erp.example.com.br/hook", "secure URL"),
        ("duimp.registro", "https:///no-host", "no host"),
        ("duimp.registro", "https://e.br/" + "a" * 488, "at most 500"),
        ("duimp.registro", "", "required"),
        ("x" * 41, HOOK, "at most 40"),
        ("", HOOK, "required"),
        ("   ", HOOK, "required"),
    ],
)
def test_invalid_subscriptions_are_refused_before_sending(
    evento: str, endpoint: str, message: str
) -> None:
    recorder = Recorder()
    with pytest.raises(SubscriptionError, match=message):
        call(recorder, lambda api: api.create(evento, endpoint))
    with pytest.raises(SubscriptionError, match=message):
        call(recorder, lambda api: api.update(3, evento, endpoint))
    assert recorder.requests == []  # not even the authentication


def test_the_limits_themselves_are_accepted() -> None:
    evento, endpoint = "e" * 40, "https://e.br/" + "a" * 487
    assert len(endpoint) == 500
    recorder = Recorder({"id": 1, "evento": evento, "endpoint": endpoint})
    created = call(recorder, lambda api: api.create(evento, endpoint))
    assert created == Subscription(1, evento, endpoint)
    (sent,) = recorder.api_calls()
    assert sent.method == "POST" and sent.url.path == "/portal/api/ext/webhook"
    assert json.loads(sent.content) == {"evento": evento, "endpoint": endpoint}


def test_update_and_delete_follow_the_seed() -> None:
    recorder = Recorder({"id": 8, "evento": "duimp.registro", "endpoint": HOOK})
    call(recorder, lambda api: api.update(8, "duimp.registro", HOOK))
    call(recorder, lambda api: api.delete(8))
    put, delete = recorder.api_calls()
    assert (put.method, put.url.path) == ("PUT", "/portal/api/ext/webhook/8")
    assert json.loads(put.content) == {"id": 8, "evento": "duimp.registro", "endpoint": HOOK}
    assert (delete.method, delete.url.path) == ("DELETE", "/portal/api/ext/webhook/8")
    assert json.loads(delete.content) == {"id": 8}


@pytest.mark.parametrize("bad_id", [0, -1, 10_000_000_000, True])
def test_ids_are_number_10(bad_id: int) -> None:
    recorder = Recorder()
    with pytest.raises(SubscriptionError, match="id"):
        call(recorder, lambda api: api.delete(bad_id))
    assert recorder.requests == []


def test_list_reads_the_seed_fields() -> None:
    recorder = Recorder([{"id": 1, "evento": "duimp.registro", "endpoint": HOOK}])
    assert call(recorder, lambda api: api.list()) == [Subscription(1, "duimp.registro", HOOK)]


def test_a_refusal_by_the_portal_is_a_subscription_error_naming_endpoint_and_status() -> None:
    recorder = Recorder({"message": "evento inexistente"}, code=422)
    with pytest.raises(SubscriptionError) as refused:
        call(recorder, lambda api: api.create("nao.existe", HOOK))
    assert refused.value.status == 422 and refused.value.endpoint == "/portal/api/ext/webhook"
    assert "evento inexistente" in str(refused.value)


def test_failures_send_the_date_as_ddmmyyyy() -> None:
    record = {"id": 1, "data": "17092018", "descricao": "timeout", "evento": "e", "conteudo": "{}"}
    recorder = Recorder([record])
    (found,) = call(recorder, lambda api: api.failures("17092018"))
    assert found.conteudo == "{}" and found.data == "17092018"
    call(recorder, lambda api: api.failures(date(2024, 2, 1)))
    first, second = recorder.api_calls()
    assert first.url.path == "/portal/api/ext/webhook/falhas" and first.method == "GET"
    assert first.url.params["data"] == "17092018"
    assert json.loads(first.content) == {"data": "17092018"}
    assert second.url.params["data"] == "01022024"  # the leading zero survives: Text(8)


@pytest.mark.parametrize("bad", ["2018-09-17", "1709201", "31022024", "17/09/2018", "abcdefgh"])
def test_bad_dates_are_refused_before_sending(bad: str) -> None:
    recorder = Recorder([])
    with pytest.raises(SubscriptionError, match="ddMMyyyy"):
        call(recorder, lambda api: api.failures(bad))
    assert recorder.requests == []


def test_no_date_means_the_portals_today() -> None:
    brasilia = datetime.now(timezone(timedelta(hours=-3))).date()
    assert format_date(None) == brasilia.strftime("%d%m%Y")
    assert format_date(date(2018, 9, 17)) == "17092018"


def test_failure_search_without_a_date_lets_the_portal_choose() -> None:
    recorder = Recorder([])
    assert call(recorder, lambda api: api.failures()) == []
    [request] = recorder.api_calls()
    assert request.url.params.get("data") is None
    assert request.content in (b"", b"{}")


def test_an_answer_of_the_wrong_shape_is_an_error() -> None:
    recorder = Recorder({"not": "a list"})
    with pytest.raises(Exception, match="JSON array"):
        call(recorder, lambda api: api.list())
    recorder = Recorder([{"id": "x", "evento": "e", "endpoint": HOOK}])
    with pytest.raises(Exception, match="not a number"):
        call(recorder, lambda api: api.list())


def test_check_endpoint_keeps_a_good_url() -> None:
    assert check_endpoint(HOOK) == HOOK


def spec(evento: str, endpoint: str = HOOK) -> SubscriptionSpec:
    return SubscriptionSpec(evento=evento, endpoint=endpoint)


def test_plan_keeps_updates_creates_and_deletes() -> None:
    current = [
        Subscription(1, "duimp.registro", HOOK),
        Subscription(2, "duimp.retificacao", "https://old.example/hook"),
        Subscription(3, "lpco.registro", HOOK),
    ]
    wanted = [spec("duimp.registro"), spec("duimp.retificacao"), spec("duimp.desembaraco")]
    plan = plan_sync(current, wanted)
    assert plan.keep == (current[0],)
    assert plan.update == ((current[1], spec("duimp.retificacao")),)
    assert plan.create == (spec("duimp.desembaraco"),)
    assert plan.delete == (current[2],)
    assert not plan.empty and len(plan.lines()) == 4


def test_plan_of_a_matching_portal_is_empty_and_repeats_count_once() -> None:
    current = [Subscription(1, "duimp.registro", HOOK)]
    plan = plan_sync(current, [spec("duimp.registro"), spec("duimp.registro")])
    assert plan.empty and plan.keep == (current[0],)


def test_plan_removes_duplicates_at_the_portal() -> None:
    current = [Subscription(1, "duimp.registro", HOOK), Subscription(2, "duimp.registro", HOOK)]
    plan = plan_sync(current, [spec("duimp.registro")])
    assert plan.keep == (current[0],) and plan.delete == (current[1],)


def test_plan_refuses_an_http_endpoint_in_the_config() -> None:
    with pytest.raises(SubscriptionError, match="secure URL"):
        plan_sync([], [spec("duimp.registro", "http://erp.example/hook")])


def test_plan_creates_again_what_the_portal_cancelled_and_never_touches_it() -> None:
    lost = Subscription(4, "dimp-registro-import", HOOK, ativo=False, motivo_inativacao="30 dias")
    other_lost = Subscription(5, "lpco.registro", HOOK, ativo=False)
    plan = plan_sync([lost, other_lost], [spec("dimp-registro-import")])
    assert plan.recreate == (lost,) and plan.create == () and plan.delete == ()
    assert plan.lines() == [
        f"  create  dimp-registro-import -> {HOOK}  (again: the Portal cancelled #4: 30 dias)"
    ]
    assert "1 re-created after the Portal cancelled them" in plan.summary()


def test_an_active_subscription_wins_over_a_cancelled_one() -> None:
    lost = Subscription(4, "dimp-registro-import", HOOK, ativo=False)
    alive = Subscription(6, "dimp-registro-import", HOOK)
    plan = plan_sync([lost, alive], [spec("dimp-registro-import")])
    assert plan.empty and plan.keep == (alive,)


def test_resend_secret_updates_the_kept_ones() -> None:
    current = [Subscription(1, "duimp.registro", HOOK)]
    plan = plan_sync(current, [spec("duimp.registro")], resend_secret=True)
    assert plan.keep == () and plan.update == ((current[0], spec("duimp.registro")),)
    assert plan.lines() == [f"  update  #1 duimp.registro -> {HOOK}  (chaveSecreta sent again)"]


@pytest.mark.parametrize(
    ("item", "ativo", "motivo"),
    [
        ({}, True, None),
        ({"ativo": True, "motivoInativacao": "x"}, True, None),
        ({"ativo": False, "motivoInativacao": "erros"}, False, "erros"),
        ({"ativo": "false", "motivo": "erros"}, False, "erros"),
        ({"situacao": "INATIVA"}, False, None),
        ({"situacao": "ATIVA"}, True, None),
    ],
)
def test_the_listing_reads_whether_a_subscription_is_active(
    item: dict[str, object], ativo: bool, motivo: str | None
) -> None:
    from receiver.portal.subscriptions import read_subscription

    found = read_subscription({"id": 1, "evento": "e", "endpoint": HOOK, **item}, "/p")
    assert (found.ativo, found.motivo_inativacao) == (ativo, motivo)
