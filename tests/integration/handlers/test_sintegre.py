"""handlers.sintegre against real HTTPS file servers (trustme certificates), through ``ctx.http``:
downloads once with a checksum, bounded per file and in total, and never reaches an internal
address, plain http or a proxy, whatever the notification's ``Uri`` or a redirect says."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

import handlers.sintegre
from receiver import AddressRefused, GiveUp, Retry, guarded_client
from receiver.config import DownloadSettings, settings_from_mapping
from receiver.dispatcher.tls import server_ssl_context
from receiver.runtime.services import build_worker, outbound_client
from receiver.store import NoteFilter, Store
from receiver.store.tables import JobStatus
from receiver.testing import MemoryResults
from receiver.worker.routing import Routing
from tests.integration.portal.support import context, dispatch, serve, stored

PRODUCT = bytes(range(256)) * 4096  # 1 MiB
LOCAL = ["127.0.0.1/32"]  # the file server's address, allowed as a deployment would list it


class Files:
    """A file server that records every path it was asked for."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.failing = 0
        self.redirect_to = ""

    def app(self) -> Starlette:
        async def product(request: Request) -> Response:
            self.hits.append(request.url.path)
            if self.failing:
                self.failing -= 1
                return Response(status_code=503)
            return Response(PRODUCT, media_type="application/zip")

        async def endless(request: Request) -> StreamingResponse:
            self.hits.append(request.url.path)

            async def chunks() -> Any:
                for _ in range(64):
                    yield b"\0" * 65536

            return StreamingResponse(chunks())  # no Content-Length: the limit applies while reading

        async def moved(request: Request) -> Response:
            self.hits.append(request.url.path)
            return RedirectResponse(self.redirect_to, status_code=302)

        return Starlette(
            routes=[
                Route("/produtos/{name}", product),
                Route("/grande/{name}", endless),
                Route("/movido/{name}", moved),
            ]
        )


@dataclass
class Servers:
    files: Files  # on 127.0.0.1, which the tests allow
    url: str
    other: Files  # on 127.0.0.2, which no test allows
    other_url: str
    ca_pem: Path


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    server_pem, ca_pem = folder / "server.pem", folder / "ca.pem"
    cert = ca.issue_cert("127.0.0.1", "127.0.0.2", "localhost", "::1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(server_pem))
    ca.cert_pem.write_to_path(str(ca_pem))
    tls = server_ssl_context(server_pem, client_certs="none")
    files, other = Files(), Files()
    with serve(files.app(), tls) as url, serve(other.app(), tls, host="127.0.0.2") as other_url:
        yield Servers(files, url, other, other_url, ca_pem)


@pytest.fixture
def served(servers: Servers) -> Servers:
    for files in (servers.files, servers.other):
        files.hits.clear()
        files.failing = 0
    return servers


@pytest.fixture
def store(sqlite_store: Store) -> Store:
    return sqlite_store


def sintegre_payload(uri: str) -> dict[str, str]:
    return {
        "Nome": "Carga Horária Verificada",
        "Processo": "Programação Diária",
        "MacroProcesso": "Programação da Operação",
        "DataProduto": "02/05/2024",
        "Periodicidade": "2024-05-02T00:00:00",
        "PeriodicidadeFinal": "2024-05-02T23:59:59",
        "Uri": uri,
    }


@asynccontextmanager
async def client(
    servers: Servers, allowed: list[str] = LOCAL, **options: Any
) -> AsyncIterator[httpx.AsyncClient]:
    async with guarded_client(allowed, extra_ca_file=str(servers.ca_pem), **options) as http:
        yield http


def run(
    store: Store,
    servers: Servers,
    uri: str,
    data: Path,
    results: MemoryResults | None = None,
    downloads: DownloadSettings | None = None,
    allowed: list[str] = LOCAL,
    times: int = 1,
    **options: Any,
) -> MemoryResults:
    """Store a SINtegre notification for ``uri`` and run the handler on it ``times`` times."""
    note = stored(store, "sintegre", sintegre_payload(uri))
    results = results if results is not None else MemoryResults()

    async def go() -> None:
        async with client(servers, allowed, **options) as http:
            ctx = context(
                results, data_dir=data, http_client=http, downloads=downloads or DownloadSettings()
            )
            for _ in range(times):
                await dispatch(handlers.sintegre.router, note, ctx)

    asyncio.run(go())
    return results


def files_in(data: Path) -> list[Path]:
    folder = data / "sintegre"
    return sorted(folder.iterdir()) if folder.exists() else []


def test_downloads_once_with_checksum(store: Store, tmp_path: Path, served: Servers) -> None:
    uri = f"{served.url}/produtos/carga%20horaria.zip"
    results = run(store, served, uri, tmp_path, times=2)
    (saved,) = files_in(tmp_path)
    assert saved.read_bytes() == PRODUCT and saved.name.endswith("-carga_horaria.zip")
    ((kind, key),) = results.saved
    record = asyncio.run(results.load(kind, key))
    assert record is not None and kind == "sintegre-download"
    assert record["sha256"] == hashlib.sha256(PRODUCT).hexdigest()
    assert record["size"] == len(PRODUCT) and record["file"] == saved.name
    assert served.files.hits == ["/produtos/carga horaria.zip"]  # the replay did not download again

    saved.write_bytes(b"damaged")  # a file that no longer matches its record is fetched again
    run(store, served, uri, tmp_path, results=results)
    assert saved.read_bytes() == PRODUCT and len(served.files.hits) == 2


def test_a_file_over_the_limit_gives_up_and_leaves_nothing(
    store: Store, tmp_path: Path, served: Servers
) -> None:
    limits = DownloadSettings(max_file_bytes=1_000_000)
    with pytest.raises(GiveUp, match="over the 1000000 byte limit"):  # read past the limit
        run(store, served, f"{served.url}/grande/enorme.zip", tmp_path, downloads=limits)
    assert files_in(tmp_path) == []  # no partial file left behind
    with pytest.raises(GiveUp, match="over the 1000000 byte limit"):  # Content-Length says so
        run(store, served, f"{served.url}/produtos/declarado.zip", tmp_path, downloads=limits)
    assert files_in(tmp_path) == []
    assert served.files.hits == ["/grande/enorme.zip", "/produtos/declarado.zip"]


def test_the_folder_budget_refuses_what_would_not_fit(
    store: Store, tmp_path: Path, served: Servers
) -> None:
    run(store, served, f"{served.url}/produtos/primeiro.zip", tmp_path)  # 1 MiB kept
    tight = DownloadSettings(max_total_bytes=len(PRODUCT) * 3 // 2)
    for path in ("/produtos/segundo.zip", "/grande/segundo.zip"):  # declared, then streamed
        with pytest.raises(GiveUp, match=r"downloads\.max_total_bytes"):
            run(store, served, f"{served.url}{path}", tmp_path, downloads=tight)
        assert len(files_in(tmp_path)) == 1, "the refused download left a file behind"
    roomy = DownloadSettings(max_total_bytes=len(PRODUCT) * 2)
    run(store, served, f"{served.url}/produtos/segundo.zip", tmp_path, downloads=roomy)
    assert len(files_in(tmp_path)) == 2


def test_concurrent_downloads_share_one_budget(
    store: Store, tmp_path: Path, served: Servers
) -> None:
    """Two downloads that each fit alone, but not together: exactly one is kept."""
    budget = DownloadSettings(max_total_bytes=len(PRODUCT) * 3 // 2)
    notes = [
        stored(store, "sintegre", sintegre_payload(f"{served.url}/produtos/p{n}.zip"))
        for n in range(2)
    ]

    async def go() -> list[BaseException | None]:
        async with client(served) as http:
            ctx = context(MemoryResults(), data_dir=tmp_path, http_client=http, downloads=budget)
            return await asyncio.gather(
                *(dispatch(handlers.sintegre.router, note, ctx) for note in notes),
                return_exceptions=True,
            )  # type: ignore[return-value]

    outcomes = asyncio.run(go())
    assert sorted(type(o).__name__ for o in outcomes) == ["GiveUp", "int"]
    assert len(files_in(tmp_path)) == 1


def test_server_errors_ask_for_a_retry(store: Store, tmp_path: Path, served: Servers) -> None:
    served.files.failing = 1
    uri = f"{served.url}/produtos/p.zip"
    with pytest.raises(Retry):
        run(store, served, uri, tmp_path)
    run(store, served, uri, tmp_path)
    assert len(files_in(tmp_path)) == 1


def test_without_a_folder_it_says_so(store: Store) -> None:
    note = stored(store, "sintegre", sintegre_payload("https://sintegre.ons.org.br/x.zip"))
    with pytest.raises(RuntimeError, match="store_dir"):
        asyncio.run(dispatch(handlers.sintegre.router, note, context(MemoryResults())))


def test_without_an_http_client_it_says_so(store: Store, tmp_path: Path) -> None:
    note = stored(store, "sintegre", sintegre_payload("https://sintegre.ons.org.br/x.zip"))
    with pytest.raises(Exception, match="needs an HTTP client"):
        asyncio.run(
            dispatch(handlers.sintegre.router, note, context(MemoryResults(), data_dir=tmp_path))
        )


# --- Where it may not go ------------------------------------------------------------------------


# The loopback forms name the real server's port ({port}), so a guard that let one through
# would show as a hit on it.
INTERNAL_URIS = [
    ("https://127.0.0.1:{port}/produtos/a.zip", "loopback"),
    ("https://localhost:{port}/produtos/a.zip", "loopback"),
    ("https://127.1:{port}/produtos/a.zip", "loopback"),
    ("https://2130706433:{port}/produtos/a.zip", "loopback"),
    ("https://0x7f000001:{port}/produtos/a.zip", "loopback"),
    ("https://[::1]:{port}/produtos/a.zip", "loopback"),
    ("https://[::ffff:127.0.0.1]:{port}/produtos/a.zip", "IPv4-mapped"),
    ("https://0.0.0.0:{port}/produtos/a.zip", "unspecified"),
    ("https://169.254.169.254/latest/meta-data/", "metadata"),
    ("https://[fe80::1]/x.zip", "link-local"),
    ("https://10.0.0.1/x.zip", "private"),
    ("https://172.16.5.4/x.zip", "private"),
    ("https://192.168.0.1/x.zip", "private"),
    ("https://100.64.0.1/x.zip", "carrier-grade NAT"),
    ("https://[fd00::1]/x.zip", "unique local"),
    ("http://sintegre.ons.org.br/x.zip", "http:// is not allowed"),
]


@pytest.mark.parametrize(("uri", "why"), INTERNAL_URIS)
def test_internal_addresses_and_plain_http_are_refused(
    store: Store, tmp_path: Path, served: Servers, uri: str, why: str
) -> None:
    port = served.url.rsplit(":", 1)[1]
    results = MemoryResults()
    with pytest.raises(AddressRefused, match=why):
        run(store, served, uri.format(port=port), tmp_path, results=results, allowed=[])
    assert served.files.hits == [] and files_in(tmp_path) == [] and results.saved == {}


def test_an_octal_address_is_not_even_a_url(store: Store, tmp_path: Path, served: Servers) -> None:
    port = served.url.rsplit(":", 1)[1]
    with pytest.raises(httpx.InvalidURL):
        run(store, served, f"https://0177.0.0.1:{port}/produtos/a.zip", tmp_path, allowed=[])
    assert served.files.hits == []


def test_plain_http_is_refused_even_to_an_allowed_address(
    store: Store, tmp_path: Path, served: Servers
) -> None:
    uri = served.url.replace("https://", "http://") + "/produtos/a.zip"
    with pytest.raises(AddressRefused, match="http:// is not allowed"):
        run(store, served, uri, tmp_path)
    assert served.files.hits == []


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("{other}/produtos/segredo.zip", "127.0.0.2 is a loopback address"),
        ("https://169.254.169.254/latest/meta-data/", "metadata"),
        ("https://10.1.2.3/interno.zip", "private"),
        ("{http}/produtos/segredo.zip", "http:// is not allowed"),
    ],
)
def test_a_redirect_to_an_internal_address_is_refused(
    store: Store, tmp_path: Path, served: Servers, target: str, why: str
) -> None:
    served.files.redirect_to = target.format(
        other=served.other_url, http=served.url.replace("https://", "http://")
    )
    with pytest.raises(AddressRefused, match=why):
        run(store, served, f"{served.url}/movido/a.zip", tmp_path)
    assert served.files.hits == ["/movido/a.zip"]  # asked once, the redirect not followed
    assert served.other.hits == [] and files_in(tmp_path) == []


def test_a_redirect_within_allowed_addresses_is_followed(
    store: Store, tmp_path: Path, served: Servers
) -> None:
    served.files.redirect_to = f"{served.url}/produtos/destino.zip"
    run(store, served, f"{served.url}/movido/a.zip", tmp_path)
    assert served.files.hits == ["/movido/a.zip", "/produtos/destino.zip"]
    (saved,) = files_in(tmp_path)
    assert saved.read_bytes() == PRODUCT


def test_no_redirect_is_followed_when_none_are_allowed(
    store: Store, tmp_path: Path, served: Servers
) -> None:
    served.files.redirect_to = f"{served.url}/produtos/destino.zip"
    with pytest.raises(ValueError, match="answered 302"):
        run(store, served, f"{served.url}/movido/a.zip", tmp_path, max_redirects=0)
    assert served.files.hits == ["/movido/a.zip"]


def test_proxy_variables_are_ignored(
    store: Store, tmp_path: Path, served: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A proxy that does not exist: a client that used it could not download anything.
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    run(store, served, f"{served.url}/produtos/via-proxy.zip", tmp_path)
    assert len(files_in(tmp_path)) == 1


# --- From receiver.yaml, through the worker ------------------------------------------------------


def test_the_worker_gives_handlers_the_configured_guarded_client(
    store: Store, tmp_path: Path, served: Servers
) -> None:
    """``outbound:`` reaches ``ctx.http``; a refused download is a dead letter at the first
    attempt, with the reason, however many attempts ``retry:`` allows."""
    settings = settings_from_mapping(
        {
            "database_url": "sqlite://",
            "outbound": {"allowed_networks": LOCAL, "ca_file": str(served.ca_pem)},
            "downloads": {"max_file_bytes": 2_000_000},
            "store_dir": str(tmp_path),
            "retry": {"max_attempts": 5, "backoff_seconds": 0.01, "jitter": 0},
            "worker": {"poll_interval_seconds": 0.02},
        }
    )
    good = stored(store, "sintegre", sintegre_payload(f"{served.url}/produtos/bom.zip"))
    big = stored(store, "sintegre", sintegre_payload(f"{served.url}/grande/enorme.zip"))
    inside = stored(store, "sintegre", sintegre_payload("https://169.254.169.254/x.zip"))
    routing = Routing([handlers.sintegre.router], settings.sources)

    async def go() -> None:
        async with outbound_client(settings) as http:
            worker = build_worker(settings, store, routing, http=http)
            stop = asyncio.Event()
            task = asyncio.create_task(worker.run(stop, grace_seconds=1))
            deadline = asyncio.get_running_loop().time() + 20
            while {r["status"] for r in store.notes(NoteFilter())} & {"pending", "failed"}:
                assert asyncio.get_running_loop().time() < deadline, "jobs did not finish"
                await asyncio.sleep(0.05)
            stop.set()
            await task

    asyncio.run(go())
    rows = {row["id"]: row for row in store.notes(NoteFilter())}
    assert rows[good.id]["status"] == JobStatus.DONE.value
    for note, why in ((big, "2000000 byte limit"), (inside, "metadata")):
        assert rows[note.id]["status"] == JobStatus.DEAD.value
        (job,) = store.jobs_of(note.id)
        assert job["attempts"] == 1, "a refusal must not be retried"
        assert why in job["last_error"]
    assert [p.name.endswith("-bom.zip") for p in files_in(tmp_path)] == [True]


def test_outbound_settings_are_checked(tmp_path: Path) -> None:
    from receiver.errors import ConfigError

    with pytest.raises(ConfigError, match=r"outbound\.allowed_networks: .*not a CIDR"):
        settings_from_mapping({"outbound": {"allowed_networks": ["intranet"]}}, origin="r.yaml")
    with pytest.raises(ConfigError, match=r"downloads\.max_total_bytes"):
        settings_from_mapping({"downloads": {"max_total_bytes": 0}}, origin="r.yaml")
    settings = settings_from_mapping(
        {"outbound": {"ca_file": "ca.pem"}}, origin="r.yaml", base_dir=tmp_path
    )
    assert settings.outbound.ca_file == tmp_path / "ca.pem"  # next to the file, like other paths
    assert json.loads(settings.model_dump_json())["outbound"]["allow_http"] is False
