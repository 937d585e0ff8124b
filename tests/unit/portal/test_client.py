"""The Portal client's token flow, retries and errors, on httpx.MockTransport (no network)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from receiver.config import PortalSettings
from receiver.errors import ConfigError, PortalAuthError, PortalError
from receiver.portal import PortalClient
from receiver.portal.session import expiration_in

NUMERO = "24BR0000012345"
DUIMP = f"/duimp-api/api/ext/duimp/{NUMERO}/1"
AUTH = "/portal/api/autenticar"
CHAVE_ACESSO = "/portal/api/autenticar/chave-acesso"
VERSIONS = f"/duimp-api/api/ext/duimp/{NUMERO}/versoes"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Portal:
    """Answers autenticar with numbered tokens; other paths via ``answers`` (a queue per path)."""

    def __init__(self, expiration: str | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.tokens = 0
        self.expiration = expiration
        self.answers: dict[str, list[Callable[[httpx.Request], httpx.Response]]] = {}

    def then(self, path: str, *answers: Callable[[httpx.Request], httpx.Response]) -> None:
        self.answers.setdefault(path, []).extend(answers)

    def paths(self) -> list[str]:
        return [request.url.path for request in self.requests]

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path in (AUTH, CHAVE_ACESSO):
            self.tokens += 1
            await asyncio.sleep(0.01)  # long enough for concurrent callers to pile up
            headers = {"Set-Token": f"Bearer t{self.tokens}", "X-CSRF-Token": f"c{self.tokens}"}
            if self.expiration is not None:
                headers["X-CSRF-Expiration"] = self.expiration
            return httpx.Response(200, headers=headers)
        queue = self.answers.get(request.url.path)
        if queue:
            return queue.pop(0)(request)
        return httpx.Response(200, json={"numeroDeclaracao": NUMERO})


def ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"numeroDeclaracao": NUMERO})


def status(code: int, **headers: str) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(code, json={"message": f"erro {code}"}, headers=headers)


def raises(error: type[Exception]) -> Callable[[httpx.Request], httpx.Response]:
    def answer(request: httpx.Request) -> httpx.Response:
        raise error("boom", request=request)  # type: ignore[call-arg]

    return answer


def make(portal: Portal, clock: FakeClock | None = None, **changes: Any) -> PortalClient:
    settings = PortalSettings(base_url="https://portal.test", **{"max_retries": 2, **changes})
    extra: dict[str, Any] = {}
    if clock is not None:
        extra = {"clock": clock, "wall_clock": lambda: 1_700_000_000.0}
    return PortalClient(
        settings, transport=httpx.MockTransport(portal.handle), backoff_seconds=0.001, **extra
    )


def run(client: PortalClient, work: Callable[[PortalClient], Any]) -> Any:
    async def go() -> Any:
        async with client:
            return await work(client)

    return asyncio.run(go())


def test_session_headers_go_back_on_later_calls() -> None:
    portal = Portal()
    run(make(portal, role_type="SEFAZ"), lambda c: c.duimp(NUMERO, "1"))
    auth, call = portal.requests
    assert auth.method == "POST" and auth.headers["Role-Type"] == "SEFAZ"
    assert "Client-Id" not in auth.headers
    assert call.url.path == DUIMP
    assert call.headers["Authorization"] == "Bearer t1" and call.headers["X-CSRF-Token"] == "c1"


def test_client_id_and_secret_go_to_chave_acesso() -> None:
    portal = Portal()
    portal.then(VERSIONS, lambda r: httpx.Response(200, json=[{"versao": 1}, {"versao": 3}]))
    run(make(portal, client_id="abc", client_secret="xyz"), lambda c: c.duimp(NUMERO))
    auth = portal.requests[0]
    assert auth.url.path == CHAVE_ACESSO
    assert auth.headers["Client-Id"] == "abc" and auth.headers["Client-Secret"] == "xyz"
    assert auth.headers["Role-Type"] == "IMPEXP"
    assert portal.paths()[1:] == [VERSIONS, f"/duimp-api/api/ext/duimp/{NUMERO}/3"]


@pytest.mark.parametrize(
    ("answer", "latest"),
    [
        ([{"versao": 1}, {"versao": 2}], "2"),
        ([1, 4, 2], "4"),
        (["1", "2"], "2"),
        ({"versoes": [{"numeroVersao": 5}, {"numeroVersao": 3}]}, "5"),
        ([{"versaoDuimp": "7"}], "7"),
    ],
)
def test_the_latest_version_is_read_from_versoes(answer: Any, latest: str) -> None:
    portal = Portal()
    portal.then(VERSIONS, lambda r: httpx.Response(200, json=answer))
    run(make(portal), lambda c: c.duimp(NUMERO))
    assert portal.paths()[-1] == f"/duimp-api/api/ext/duimp/{NUMERO}/{latest}"


@pytest.mark.parametrize("answer", [[], {}, [{"x": 1}], ["v1"], [True], None])
def test_a_versoes_answer_without_a_version_is_a_portal_error(answer: Any) -> None:
    portal = Portal()
    portal.then(VERSIONS, lambda r: httpx.Response(200, json=answer))
    with pytest.raises(PortalError, match="no version number"):
        run(make(portal), lambda c: c.duimp(NUMERO))


def test_the_fresh_csrf_token_of_each_answer_goes_on_the_next_call() -> None:
    portal = Portal()
    fresh = iter(["f1", "f2"])
    portal.then(
        DUIMP,
        lambda r: httpx.Response(200, json={}, headers={"X-CSRF-Token": next(fresh)}),
        lambda r: httpx.Response(200, json={}, headers={"X-CSRF-Token": next(fresh)}),
        ok,
    )

    async def three(client: PortalClient) -> None:
        for _ in range(3):
            await client.duimp(NUMERO, "1")

    run(make(portal), three)
    sent = [r.headers["X-CSRF-Token"] for r in portal.requests if r.url.path == DUIMP]
    assert sent == ["c1", "f1", "f2"]
    assert {r.headers["Authorization"] for r in portal.requests[1:]} == {"Bearer t1"}


def test_a_fresh_csrf_token_for_an_old_session_is_ignored() -> None:
    portal = Portal()
    # The first call is refused (a Portal restart): the session is renewed; a late answer
    # about the old session must not put its token on the new one.
    portal.then(DUIMP, status(401), ok, ok)

    async def work(client: PortalClient) -> None:
        old = await client.tokens.current()
        await client.duimp(NUMERO, "1")
        client.tokens.renew_csrf(old, "stale")
        await client.duimp(NUMERO, "1")

    run(make(portal), work)
    assert portal.requests[-1].headers["X-CSRF-Token"] == "c2"


def test_a_non_ascii_secret_is_a_configuration_error() -> None:
    portal = Portal()
    with pytest.raises(ConfigError, match="Client-Secret"):
        run(make(portal, client_id="abc", client_secret="çedilha"), lambda c: c.duimp(NUMERO))
    assert portal.requests == []


def test_concurrent_callers_share_one_authentication() -> None:
    portal = Portal()

    async def many(client: PortalClient) -> list[dict[str, Any]]:
        return await asyncio.gather(*(client.duimp(NUMERO, "1") for _ in range(50)))

    assert len(run(make(portal), many)) == 50
    assert portal.paths().count(AUTH) == 1


def test_the_token_is_renewed_shortly_before_its_lifetime_ends() -> None:
    portal, clock = Portal(), FakeClock()

    async def work(client: PortalClient) -> None:
        await client.duimp(NUMERO, "1")
        clock.now += 89  # lifetime 100 s, renewed 10 % early
        await client.duimp(NUMERO, "1")
        assert client.authentications == 1
        clock.now += 2
        await client.duimp(NUMERO, "1")
        assert client.authentications == 2

    run(make(portal, clock, token_lifetime_seconds=100), work)
    assert portal.requests[-1].headers["Authorization"] == "Bearer t2"


def test_x_csrf_expiration_shortens_the_lifetime() -> None:
    # The Portal says the session ends 30 s from now (epoch milliseconds), before our 3000 s.
    portal, clock = Portal(expiration=str((1_700_000_000 + 30) * 1000)), FakeClock()

    async def work(client: PortalClient) -> None:
        await client.duimp(NUMERO, "1")
        clock.now += 28
        await client.duimp(NUMERO, "1")

    run(make(portal, clock), work)
    assert portal.paths().count(AUTH) == 2


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1700000030000", 30.0),  # epoch ms
        ("1700000030", 30.0),  # epoch s
        ("2023-11-14T22:13:50Z", 30.0),  # ISO-8601 with zone
        ("45", 45.0),  # a duration
        ("2023-11-14T22:13:50", None),  # no zone: unknown
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_expiration_values(value: str | None, expected: float | None) -> None:
    assert expiration_in(value, 1_700_000_000.0) == expected


def test_a_401_renews_once_and_retries() -> None:
    portal = Portal()
    portal.then(DUIMP, status(401), ok)
    assert run(make(portal), lambda c: c.duimp(NUMERO, "1"))["numeroDeclaracao"] == NUMERO
    assert portal.paths() == [AUTH, DUIMP, AUTH, DUIMP]
    assert portal.requests[-1].headers["Authorization"] == "Bearer t2"


def test_a_403_after_renewal_is_an_auth_error() -> None:
    portal = Portal()
    portal.then(DUIMP, status(403), status(403))
    with pytest.raises(PortalAuthError) as refused:
        run(make(portal), lambda c: c.duimp(NUMERO, "1"))
    assert refused.value.status == 403 and refused.value.endpoint == DUIMP
    assert portal.paths() == [AUTH, DUIMP, AUTH, DUIMP]


def test_a_refused_authentication_names_the_endpoint() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"message": "certificado sem perfil"})

    client = PortalClient(
        PortalSettings(base_url="https://portal.test"), transport=httpx.MockTransport(refuse)
    )
    with pytest.raises(PortalAuthError) as refused:
        run(client, lambda c: c.duimp(NUMERO, "1"))
    assert refused.value.endpoint == AUTH and refused.value.status == 401
    assert "certificado sem perfil" in str(refused.value)


def test_an_authentication_answer_without_tokens_is_refused() -> None:
    client = PortalClient(
        PortalSettings(base_url="https://portal.test"),
        transport=httpx.MockTransport(lambda request: httpx.Response(200)),
    )
    with pytest.raises(PortalAuthError, match="Set-Token"):
        run(client, lambda c: c.duimp(NUMERO, "1"))


def test_5xx_is_retried_with_backoff() -> None:
    portal = Portal()
    portal.then(DUIMP, status(503), status(502), ok)
    assert run(make(portal), lambda c: c.duimp(NUMERO, "1"))["numeroDeclaracao"] == NUMERO
    assert portal.paths().count(DUIMP) == 3


def test_retries_are_bounded_and_the_error_names_endpoint_and_status() -> None:
    portal = Portal()
    portal.then(DUIMP, *[status(500)] * 10)
    with pytest.raises(PortalError) as failed:
        run(make(portal, max_retries=3), lambda c: c.duimp(NUMERO, "1"))
    assert portal.paths().count(DUIMP) == 4
    assert failed.value.status == 500 and failed.value.endpoint == DUIMP
    assert f"GET {DUIMP} answered 500: erro 500" in str(failed.value)


def test_retry_after_is_honoured_within_the_cap() -> None:
    portal = Portal()
    portal.then(DUIMP, status(503, **{"Retry-After": "0"}), ok)
    run(make(portal), lambda c: c.duimp(NUMERO, "1"))
    assert portal.paths().count(DUIMP) == 2


@pytest.mark.parametrize("error", [httpx.ConnectError, httpx.ReadTimeout, httpx.ReadError])
def test_connection_errors_are_retried(error: type[Exception]) -> None:
    portal = Portal()
    portal.then(DUIMP, raises(error), ok)
    run(make(portal), lambda c: c.duimp(NUMERO, "1"))
    assert portal.paths().count(DUIMP) == 2


def test_connection_errors_that_persist_end_in_a_portal_error() -> None:
    portal = Portal()
    portal.then(DUIMP, *[raises(httpx.ConnectError)] * 3)
    with pytest.raises(PortalError, match="ConnectError after 3 attempt"):
        run(make(portal), lambda c: c.duimp(NUMERO, "1"))


def test_a_post_is_not_repeated_when_it_may_have_arrived() -> None:
    portal = Portal()
    path = "/portal/api/ext/webhook"
    portal.then(path, status(500), raises(httpx.ReadTimeout), ok)

    async def create(client: PortalClient) -> Any:
        return await client.subscriptions.create("duimp.registro", "https://erp.example/hook")

    with pytest.raises(PortalError) as failed:
        run(make(portal), create)
    assert failed.value.status == 500 and portal.paths().count(path) == 1
    portal.requests.clear()
    with pytest.raises(PortalError, match="ReadTimeout after 1 attempt"):
        run(make(portal), create)
    assert portal.paths().count(path) == 1


def test_a_post_is_retried_when_it_never_left() -> None:
    portal = Portal()
    path = "/portal/api/ext/webhook"
    created = {"id": 7, "evento": "duimp.registro", "endpoint": "https://erp.example/hook"}
    portal.then(path, raises(httpx.ConnectError), lambda r: httpx.Response(200, json=created))

    async def create(client: PortalClient) -> Any:
        return await client.subscriptions.create("duimp.registro", "https://erp.example/hook")

    assert run(make(portal), create).id == 7
    assert portal.paths().count(path) == 2


def test_a_404_is_a_portal_error_with_the_portal_message() -> None:
    portal = Portal()
    portal.then(DUIMP, status(404))
    with pytest.raises(PortalError) as failed:
        run(make(portal), lambda c: c.duimp(NUMERO, "1"))
    assert failed.value.status == 404 and "erro 404" in str(failed.value)
    assert portal.paths().count(DUIMP) == 1


def test_a_non_json_answer_is_a_portal_error() -> None:
    portal = Portal()
    portal.then(DUIMP, lambda r: httpx.Response(200, text="<html>manutenção</html>"))
    with pytest.raises(PortalError, match="not JSON"):
        run(make(portal), lambda c: c.duimp(NUMERO, "1"))


@pytest.mark.parametrize(
    ("numero", "versao"),
    [("24BR0000012345/../x", "1"), ("../../portal", None), (NUMERO, "1/2"), (NUMERO, "x")],
)
def test_bad_duimp_references_are_refused_before_sending(numero: str, versao: str | None) -> None:
    portal = Portal()
    with pytest.raises(PortalError):
        run(make(portal), lambda c: c.duimp(numero, versao))
    assert portal.requests == []
