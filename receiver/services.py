"""Long-running services that ``receiver serve`` runs beside ingest (the in-process worker)."""

from __future__ import annotations

from receiver.app import BackgroundService
from receiver.config import Settings


def background_services(settings: Settings) -> list[BackgroundService]:
    return []
