"""The admin listener of ``serve --workers N``: one address for N serving processes.

The processes cannot all bind ``admin_listen``, and N listeners (or SO_REUSEPORT, where each
scrape lands on one process by chance) would give answers that disagree from one scrape to the
next. So the supervisor binds it, and each serving process serves its own admin app on a Unix
socket in a private folder (``ADMIN_DIR_ENV``), named by its pid. The supervisor's answers:

- ``/healthz``: the supervisor runs (it replaces a serving process that dies);
- ``/readyz``: every serving process is ready (connections go to any of them);
- ``/metrics``: every serving process's metrics in one exposition, each sample labelled
  ``process="1"`` ... ``"N"`` (the process's place, which a replacement takes over: a restart is
  a counter reset of that series, as Prometheus expects), plus ``receiver_serving_process_up``.
  Sum them with ``sum without (process) (rate(...))``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

if TYPE_CHECKING:
    import httpx

ADMIN_DIR_ENV = "RECEIVER_ADMIN_DIR"
PROCESS_LABEL = "process"
ASK_TIMEOUT_SECONDS = 5.0


def process_socket(folder: str, pid: int) -> str:
    """Where serving process ``pid`` serves its admin app."""
    return os.path.join(folder, f"serve-{pid}.sock")


class _Families:
    """A registry's worth of parsed families, for ``generate_latest``."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


def merge_expositions(texts: Sequence[tuple[str, str | None]]) -> bytes:
    """One exposition from each process's (``label``, its text, or None when it did not answer):
    every sample labelled ``process=label``, families of the same name merged, and
    ``receiver_serving_process_up`` saying which answered."""
    merged: dict[str, Metric] = {}
    up = Metric("receiver_serving_process_up", "1 when the serving process answered", "gauge")
    for label, text in texts:
        up.add_sample(up.name, {PROCESS_LABEL: label}, 0.0 if text is None else 1.0)
        if text is None:
            continue
        for family in text_string_to_metric_families(text):
            into = merged.get(family.name)
            if into is None:
                into = merged[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
            for sample in family.samples:
                into.samples.append(
                    Sample(
                        sample.name,
                        {**sample.labels, PROCESS_LABEL: label},
                        sample.value,
                        sample.timestamp,
                        sample.exemplar,
                    )
                )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families([up, *merged.values()]))
    return generate_latest(registry)


class Fleet:
    """The serving processes of ``serve --workers N``, asked over their Unix sockets; ``pids``
    gives their pids in place order (None for a place being refilled)."""

    def __init__(self, folder: str, pids: Callable[[], Sequence[int | None]]) -> None:
        self._folder = folder
        self._pids = pids

    async def _ask(self, pid: int | None, path: str) -> httpx.Response | None:
        if pid is None:
            return None
        import httpx  # only the supervisor of serve --workers N asks: not every process loads it

        transport = httpx.AsyncHTTPTransport(uds=process_socket(self._folder, pid))
        try:
            async with httpx.AsyncClient(
                transport=transport, base_url="http://serve", timeout=ASK_TIMEOUT_SECONDS
            ) as client:
                return await client.get(path)
        except httpx.HTTPError:
            return None

    async def ready(self) -> bool:
        pids = list(self._pids())
        answers = await asyncio.gather(*(self._ask(pid, "/readyz") for pid in pids))
        return bool(pids) and all(a is not None and a.status_code == 200 for a in answers)

    async def metrics_text(self) -> bytes:
        pids = list(self._pids())
        answers = await asyncio.gather(*(self._ask(pid, "/metrics") for pid in pids))
        return merge_expositions(
            [
                (str(place), a.text if a is not None and a.status_code == 200 else None)
                for place, a in enumerate(answers, start=1)
            ]
        )
