"""(d) the peer: a webhook receiver written the usual way with the same packages, as teams write
one by hand (a FastAPI/Starlette tutorial's shape): Starlette, a SQLModel table, one session and
one commit per request in Starlette's thread pool, the engine as ``create_engine`` makes it.

It checks the Bearer token (or, with the Portal's headers, the ``secret`` header), stores the
body and a few headers, and answers 200 with the row's id, so the bench's store check reads it
back by id like the receiver's (the table is named ``notifications`` and has ``id`` and
``body``). What it does not do (an address allowlist, deduplication, a 503 when the store is
slow, bounded waits) is left out as such receivers leave it out; it is the baseline "what a team
would have without this project", not a straw man: SQLite in WAL mode would be faster, but
``create_engine("sqlite:///...")`` does not set it, and neither do the tutorials.
"""

from __future__ import annotations

import hmac
import json
import os
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, LargeBinary
from sqlmodel import Field, Session, SQLModel, create_engine
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from loadtests.bench.targets import PEER_DATABASE_ENV


class PeerNotification(SQLModel, table=True):
    __tablename__ = "notifications"

    id: str = Field(primary_key=True)
    source: str
    event: str | None = None
    received_at: datetime
    headers: str
    body: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


def peer_app() -> Any:
    url = os.environ[PEER_DATABASE_ENV]
    token = os.environ.get("BENCH_PUCOMEX_TOKEN", "")
    portal = os.environ.get("BENCH_PORTAL_HEADERS") == "1"
    sqlite = url.startswith("sqlite")
    engine = create_engine(url, connect_args={"check_same_thread": False} if sqlite else {})
    SQLModel.metadata.create_all(engine)

    def save(note: PeerNotification) -> None:
        with Session(engine) as session:
            session.add(note)
            session.commit()

    async def webhook(request: Request) -> Response:
        if portal:
            given = request.headers.get("secret", "")
        else:
            given = request.headers.get("authorization", "").removeprefix("Bearer ")
        if not hmac.compare_digest(given.encode(), token.encode()):
            return JSONResponse({"detail": "unauthorized"}, status_code=401)
        body = await request.body()
        note = PeerNotification(
            id=uuid.uuid4().hex.upper(),
            source=request.path_params["source"],
            event=request.headers.get("event-type"),
            received_at=datetime.now(UTC),
            headers=json.dumps({"content-type": request.headers.get("content-type")}),
            body=body,
        )
        note_id = note.id  # read before the commit expires the instance
        await run_in_threadpool(save, note)
        return JSONResponse({"id": note_id, "duplicate": False})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/webhooks/{source}", webhook, methods=["POST"]),
            Route("/healthz", healthz),
        ]
    )
