"""Reference handler: when SINtegre publishes a product, download its file, once.

SINtegre's notification carries ``Uri``, a direct download link that needs no authentication
(seed ``sintegre-webhook-guia.txt``; ONS's own example receivers read ``Url``, so either name is
taken, in any case). The sender chooses that URL, so it is fetched with
``ctx.http``, the guarded client: public addresses only (plus ``outbound.allowed_networks``),
https only (unless ``outbound.allow_http``), every redirect hop checked the same way, proxy
variables ignored. A refused URL raises ``AddressRefused`` and the job is dead-lettered with the
reason, not retried.

The file is streamed to disk under ``ctx.data_dir`` (the ``store_dir`` of ``receiver.yaml``) with
a SHA-256 checksum, written to a temporary file and renamed into place, so a crash never leaves
half a file under the real name. Disk is bounded twice (``downloads:`` in ``receiver.yaml``): one
file at most ``max_file_bytes``, and every file in the handler's folder together at most
``max_total_bytes``; a download that would pass either is stopped, its partial file removed, and
the job dead-lettered (``GiveUp``): free space or raise the limit, then ``receiver replay --dead``.
A record of what was downloaded makes a replay of the same notification a no-op.
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

from receiver import Context, GiveUp, Notification, Retry, Router, SintegreProduct

router = Router()

CHUNK_BYTES = 1 << 16
RECORD_KIND = "sintegre-download"


def product_uri(payload: SintegreProduct | Any) -> str:
    """The download link: ``note.parsed`` (a ``SintegreProduct``), or a payload as a dict."""
    if isinstance(payload, SintegreProduct):
        uri: Any = payload.uri
    else:
        fields = (
            {str(k).lower(): v for k, v in payload.items()} if isinstance(payload, dict) else {}
        )
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


def file_size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def folder_bytes(folder: Path) -> int:
    """What the files in ``folder`` take, partial downloads included."""
    total = 0
    with os.scandir(folder) as entries:
        for entry in entries:
            with contextlib.suppress(FileNotFoundError):  # removed while we looked
                if entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
    return total


class DiskBudget:
    """The bytes in one folder against ``max_total_bytes``, shared by this process's downloads.

    The folder is measured when a download starts and none is running (so files removed by hand
    count at once); while some run, each adds what it writes and takes back what it removes, so
    two concurrent downloads cannot both fit in the same free space. Other processes writing to
    the same folder are seen only at the next measure: give each worker its own ``store_dir``.
    """

    _budgets: dict[Path, DiskBudget] = {}

    def __init__(self) -> None:
        self.used = 0
        self.running = 0

    @classmethod
    def of(cls, folder: Path) -> DiskBudget:
        return cls._budgets.setdefault(folder.resolve(), cls())

    async def start(self, folder: Path) -> None:
        if self.running == 0:
            self.used = await asyncio.to_thread(folder_bytes, folder)
        self.running += 1

    def stop(self) -> None:
        self.running -= 1


async def download(
    client: httpx.AsyncClient,
    uri: str,
    target: Path,
    max_file_bytes: int,
    max_total_bytes: int,
) -> tuple[str, int]:
    """Stream ``uri`` into ``target`` (temp file, fsync, rename); return (sha256, size)."""
    budget = DiskBudget.of(target.parent)
    await budget.start(target.parent)
    try:
        return await _download(client, uri, target, max_file_bytes, max_total_bytes, budget)
    finally:
        budget.stop()


async def _download(
    client: httpx.AsyncClient,
    uri: str,
    target: Path,
    max_file_bytes: int,
    max_total_bytes: int,
    budget: DiskBudget,
) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0

    def check(more: int) -> None:
        if size + more > max_file_bytes:
            raise GiveUp(
                f"{uri} is over the {max_file_bytes} byte limit (downloads.max_file_bytes)"
            )
        if budget.used + more > max_total_bytes:
            raise GiveUp(
                f"{uri} does not fit: the SINtegre folder would pass {max_total_bytes} bytes "
                "(downloads.max_total_bytes); free space or raise it, then replay"
            )

    async with client.stream("GET", uri) as response:
        if response.status_code >= 500 or response.status_code == 429:
            raise Retry(after=60, reason=f"GET {uri} answered {response.status_code}")
        if response.status_code != 200:
            raise ValueError(f"GET {uri} answered {response.status_code}")
        declared = response.headers.get("content-length", "")
        if declared.isascii() and declared.isdigit():
            check(int(declared))
        part = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed below, renamed or removed
            dir=target.parent, prefix=f".{target.name}.", suffix=".part", delete=False
        )
        try:
            with part:
                async for chunk in response.aiter_bytes(CHUNK_BYTES):
                    check(len(chunk))
                    size += len(chunk)
                    budget.used += len(chunk)
                    digest.update(chunk)
                    part.write(chunk)  # small buffered writes; the slow part is the fsync below
                part.flush()
                await asyncio.to_thread(os.fsync, part.fileno())
            replaced = file_size(target)  # a damaged earlier copy, replaced below
            os.replace(part.name, target)
            budget.used -= replaced
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(part.name)
            budget.used -= size
            raise
    return digest.hexdigest(), size


@router.on("sintegre", "produto.publicado")
async def download_product(note: Notification, ctx: Context) -> None:
    if ctx.data_dir is None:
        raise RuntimeError("the SINtegre handler needs a folder: set store_dir in receiver.yaml")
    uri = product_uri(note.parsed_as(SintegreProduct))
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
    limits = ctx.downloads
    checksum, size = await download(
        ctx.http, uri, target, limits.max_file_bytes, limits.max_total_bytes
    )
    await ctx.save(
        RECORD_KIND,
        key=note.idempotency_key,
        value={"file": target.name, "sha256": checksum, "size": size, "uri": uri},
    )
    ctx.logger.info("downloaded %s (%d bytes, sha256 %s)", target.name, size, checksum)
