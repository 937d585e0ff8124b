"""What the benchmark measures: the bare endpoint (served with ``receiver serve``'s own server
options), and the receiver's configuration and stores, read back after a run."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import sqlite3
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import uvicorn

from receiver.config import ServerSettings
from receiver.ingest.http import ReceiverProtocol, ReloadingSupervisor, uvicorn_config

PORTAL_HEADERS_ENV = "BENCH_PORTAL_HEADERS"
BARE_APP = "loadtests.bench.targets:bare_app"
RAW_APP = "loadtests.bench.targets:raw_app"
# (d) the hand-written peer, imported only by the process that serves it (loadtests.bench.peer).
PEER_APP = "loadtests.bench.peer:peer_app"
PEER_DATABASE_ENV = "BENCH_PEER_DATABASE_URL"


# --- (a) the bare ceiling ----------------------------------------------------------------------


def bare_app() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    answer = b'{"id":"00000000000000000000000000","duplicate":false}'

    async def webhook(request: Request) -> Response:
        await request.body()
        return Response(answer, media_type="application/json")

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return Starlette(
        routes=[
            Route("/webhooks/{source}", webhook, methods=["POST"]),
            Route("/healthz", healthz),
        ]
    )


def raw_app() -> Any:
    """A plain ASGI callable: what uvicorn alone costs, without Starlette (informative only)."""
    answer = b'{"id":"00000000000000000000000000","duplicate":false}'
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(answer))]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    return app


def bare_config(
    port: int, workers: int, raw: bool = False, app: str | None = None
) -> uvicorn.Config:
    """What ``receiver serve`` serves with (``uvicorn_config`` and the ``server:`` section's
    defaults), with uvicorn's own httptools protocol and no lifespan: the bare ceiling (or, with
    ``app``, the peer on the same server)."""
    return uvicorn_config(
        app or (RAW_APP if raw else BARE_APP),
        ServerSettings(),
        host="127.0.0.1",
        port=port,
        http="httptools",
        lifespan="off",
        factory=True,
        workers=workers,
    )


def serve_bare(port: int, workers: int, raw: bool = False, app: str | None = None) -> None:
    """Serve the bare endpoint (or ``app``) as ``receiver serve`` serves: one process, or
    ``workers`` under the same supervisor."""
    config = bare_config(port, workers, raw, app)
    if workers == 1:
        uvicorn.Server(config).run()
        return
    ReloadingSupervisor(config, [config.bind_socket()], check=lambda: None).run()


def server_options() -> str:
    """The options both targets are served with, as the benchmark prints them."""
    config = uvicorn_config(None, ServerSettings(), host="127.0.0.1", port=0)
    names = ("loop", "proxy_headers", "timeout_keep_alive", "limit_concurrency", "access_log")
    shown = " ".join(f"{name}={getattr(config, name)}" for name in names)
    return (
        f"{shown} (receiver.ingest.http.uvicorn_config); protocol: the receiver's "
        f"{ReceiverProtocol.__name__}, the bare endpoint's uvicorn httptools"
    )


# --- (b), (c) the receiver under test ------------------------------------------------------------


def receiver_command() -> list[str]:
    beside = Path(sys.executable).parent / "receiver"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("receiver")
    if found is None:
        sys.exit("bench: the `receiver` command is not installed (pip install -e .)")
    return [found]


GROUP_COMMIT_ENV = "BENCH_GROUP_COMMIT"


def write_config(workdir: Path, database_url: str, name: str) -> Path:
    allowlist = workdir / "allowlist.yaml"
    allowlist.write_text("pucomex: [127.0.0.1]\nsintegre: [127.0.0.1]\ninvoicy: [127.0.0.1]\n")
    config = workdir / f"{name}.yaml"
    config.write_text(
        "\n".join(
            [
                f"database_url: {json.dumps(database_url)}",
                f"allowlist: {json.dumps(str(allowlist))}",
                "trusted_proxies: []",
                "max_body_bytes: 1048576",
                "log_level: WARNING",
                "sources:",
                "  pucomex:",
                "    credentials:",
                (
                    "      - {type: header, name: secret, value: env:BENCH_PUCOMEX_TOKEN}"
                    if os.environ.get(PORTAL_HEADERS_ENV) == "1"
                    else "      - {type: bearer, token: env:BENCH_PUCOMEX_TOKEN}"
                ),
                "  sintegre:",
                "    credentials:",
                "      - {type: basic, username: ons, password: env:BENCH_PUCOMEX_TOKEN}",
                "  invoicy:",
                "    credentials: []",
                "handlers: []",
                *_group_commit_lines(),
                "",
            ]
        )
    )
    return config


def _group_commit_lines() -> list[str]:
    """``group_commit`` settings from ``--group-commit`` (a YAML flow mapping), to compare
    settings in one tree."""
    chosen = os.environ.get(GROUP_COMMIT_ENV)
    return [f"group_commit: {chosen}"] if chosen else []


def stored_ids_sqlite(path: Path, tag: str) -> tuple[set[str], int]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        ids = {row[0] for row in conn.execute("SELECT id FROM notifications")}
        ours = conn.execute(
            "SELECT count(*) FROM notifications WHERE instr(body, ?) > 0",
            (f'"bench":"{tag}-'.encode(),),
        ).fetchone()[0]
    return ids, int(ours)


def stored_ids_postgres(url: str, tag: str) -> tuple[set[str], int]:
    """The stored ids, and the rows with this run's marker; prints the run's rows per commit.

    Rows per commit is the lever of PostgreSQL's cost per notification (issue 21), read back from
    the rows: the writer gives every row of a batch the same received_at, so the run's distinct
    received_at values count its commits (the peer's rows each have their own: 1 per commit).
    """
    import psycopg

    with psycopg.connect(url) as conn:
        ids = {row[0] for row in conn.execute("SELECT id FROM notifications")}
        row = conn.execute(
            "SELECT count(*), count(DISTINCT received_at) FROM notifications "
            "WHERE position(%s in body) > 0",
            (f'"bench":"{tag}-'.encode(),),
        ).fetchone()
    rows, commits = (int(row[0]), int(row[1])) if row else (0, 0)
    if commits:
        print(f"  rows per commit in the measured run: {rows / commits:.1f} ({commits} commits)")
    return ids, rows


@contextlib.contextmanager
def scratch_database(url: str) -> Iterator[str]:
    """A fresh database on the given server, dropped afterwards, so nothing else is touched."""
    import psycopg

    name = f"receiver_bench_{secrets.token_hex(4)}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    parts = urlsplit(url)
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextlib.contextmanager
def fresh_store(
    pg_server: str | None, sqlite_path: Path
) -> Iterator[tuple[str, Callable[[str], tuple[set[str], int]]]]:
    """An empty store for one run, and how to read back what a run stored in it.

    Every run starts empty, so that rounds measure the same thing: a store grown by earlier rounds
    commits more slowly (its dedup index outgrows the page cache), which a long run shows apart.
    """
    if pg_server is None:
        yield f"sqlite:///{sqlite_path}", lambda tag: stored_ids_sqlite(sqlite_path, tag)
        return
    with scratch_database(pg_server) as url:
        yield url, lambda tag: stored_ids_postgres(url, tag)
