"""The ``dispatcher:`` section of ``receiver.yaml``, with its relative paths anchored to the file.

``receiver.config`` anchors the receiver's own paths; the dispatcher's are anchored here the same
way (a relative path in a config file means "next to that file", not "wherever I was started").
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from receiver.config import CONFIG_ENV, Settings, load_settings

_PATH_KEYS = ("tls_cert_file", "tls_key_file", "tls_ca_file", "outbound_ca_file")


def anchor_dispatcher_paths(settings: Settings, config_path: Path | None) -> Settings:
    if config_path is None:
        return settings
    base = config_path.resolve().parent
    section = settings.dispatcher
    changes: dict[str, Any] = {
        name: base / value
        for name in _PATH_KEYS
        if (value := getattr(section, name)) is not None and not value.is_absolute()
    }
    prefix = "sqlite:///"
    url = section.database_url
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix + ":memory:":
        changes["database_url"] = prefix + str(base / url[len(prefix) :])
    return settings.model_copy(update={"dispatcher": section.model_copy(update=changes)})


def load_dispatcher_settings(path: Path | str | None = None) -> Settings:
    """Settings from ``path``, else ``$RECEIVER_CONFIG``, else defaults; dispatcher paths anchored."""
    chosen = path if path is not None else (os.environ.get(CONFIG_ENV) or None)
    settings = load_settings(chosen)
    return anchor_dispatcher_paths(settings, Path(chosen) if chosen is not None else None)
