"""Reference handler: when SINtegre publishes a product, download its file, once.

SINtegre's notification carries ``Uri``, a direct download link that needs no authentication
(seed ``sintegre-webhook-guia.txt``; ONS's own example receivers read ``Url``, so either name is
taken, in any case). The file is streamed to disk under ``ctx.data_dir`` (the
``store_dir`` of ``receiver.yaml``) with a size limit and a SHA-256 checksum, written to a
temporary file and renamed into place, so a crash never leaves half a file under the real name.
A record of what was downloaded makes a replay of the same notification a no-op.

Tests (or your own code) may put an ``httpx.AsyncClient`` in ``ctx.extras["http_client"]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from receiver import Context, Notification, Retry, Router

router = Router()

MAX_FILE_BYTES = 1 << 30  # refuse anything bigger than 1 GiB
CHUNK_BYTES = 1 << 16
TIMEOUT = httpx.Timeout(30.0, read=120.0)
RECORD_KIND = "sintegre-download"


def product_uri(payload: Any) -> str:
    fields = {str(k).lower(): v for k, v in payload.items()} if isinstance(payload, dict) else {}
    uri = fields.get("uri", fields.get("url"))
    if not isinstance(uri, str) or urlsplit(uri).scheme not in ("https", "http"):
        raise ValueError(f"SINtegre notification without a usable Uri (or Url): {uri!r}")
    return uri


def file_name(uri: str, key: str) -> str:
    """The URI's last path segment, made safe, prefixed so that equal names never collide."""
    last = unquote(urlsplit(uri).path.rsplit("/", 1)[-1])
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", last).strip("._")[:100] or "produto"
    return f"{key[:16]}-{safe}"


def sha256_of(path: Path) -> str | None:
    try:
        with path.open("rb") as file:
            return hashlib.file_digest(file, "sha256").hexdigest()
    except FileNotFoundError:
        return None


async def download(client: httpx.AsyncClient, uri: str, target: Path) -> tuple[str, int]:
    """Stream ``uri`` into ``target`` (temp file, fsync, rename); return (sha256, size)."""
    digest, size = hashlib.sha256(), 0
    async with client.stream("GET", uri) as response:
        if response.status_code >= 500 or response.status_code == 429:
            raise Retry(after=60, reason=f"GET {uri} answered {response.status_code}")
        if response.status_code != 200:
            raise ValueError(f"GET {uri} answered {response.status_code}")
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_FILE_BYTES:
            raise ValueError(f"{uri} is {declared} bytes, over the {MAX_FILE_BYTES} limit")
        part = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed below, renamed or removed
            dir=target.parent, prefix=f".{target.name}.", suffix=".part", delete=False
        )
        try:
            with part:
                async for chunk in response.aiter_bytes(CHUNK_BYTES):
                    size += len(chunk)
                    if size > MAX_FILE_BYTES:
                        raise ValueError(f"{uri} is over the {MAX_FILE_BYTES} byte limit")
                    digest.update(chunk)
                    part.write(chunk)  # small buffered writes; the slow part is the fsync below
                part.flush()
                await asyncio.to_thread(os.fsync, part.fileno())
            os.replace(part.name, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(part.name)
            raise
    return digest.hexdigest(), size


@router.on("sintegre", "produto.publicado")
async def download_product(note: Notification, ctx: Context) -> None:
    if ctx.data_dir is None:
        raise RuntimeError("the SINtegre handler needs a folder: set store_dir in receiver.yaml")
    uri = product_uri(note.payload)
    folder = Path(ctx.data_dir) / "sintegre"
    folder.mkdir(parents=True, exist_ok=True)

    # Idempotent: the same notification again (replay, resend) finds its record and its file.
    record = await ctx.load(RECORD_KIND, note.idempotency_key)
    if record is not None:
        on_disk = await asyncio.to_thread(sha256_of, folder / record["file"])
        if on_disk == record["sha256"]:
            ctx.logger.info("SINtegre file %s already downloaded", record["file"])
            return

    target = folder / file_name(uri, note.idempotency_key)
    client = ctx.extras.get("http_client")
    if isinstance(client, httpx.AsyncClient):
        checksum, size = await download(client, uri, target)
    else:
        async with httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=True) as own:
            checksum, size = await download(own, uri, target)

    await ctx.save(
        RECORD_KIND,
        key=note.idempotency_key,
        value={"file": target.name, "sha256": checksum, "size": size, "uri": uri},
    )
    ctx.logger.info("downloaded %s (%d bytes, sha256 %s)", target.name, size, checksum)
