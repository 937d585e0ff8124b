"""What a SIGHUP applies in place, and what it names as needing a restart."""

from __future__ import annotations

from typing import Any

import pytest

from receiver.config import settings_from_mapping
from receiver.runtime.reload import needing_restart

BASE: dict[str, Any] = {"max_body_bytes": 4096, "server": {"limit_concurrency": 100}}


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"trusted_proxies": ["10.0.0.0/8"]}, []),
        ({"log_level": "DEBUG"}, []),
        ({"server": {"limit_concurrency": 100, "max_header_bytes": 4096}}, []),
        ({"server": {"limit_concurrency": 100, "monitoring_addresses": ["10.1.0.0/16"]}}, []),
        ({"server": {"limit_concurrency": 100, "header_timeout_seconds": 3}}, []),
        ({"max_body_bytes": 2048}, ["max_body_bytes"]),
        ({"server": {"limit_concurrency": 50}}, ["server.limit_concurrency"]),
        (
            {
                "server": {"limit_concurrency": 100, "read_timeout_seconds": 3},
                "retry_after_seconds": 9,
            },
            ["retry_after_seconds", "server.read_timeout_seconds"],
        ),
    ],
)
def test_keys_needing_a_restart_are_named(change: dict[str, Any], named: list[str]) -> None:
    running = settings_from_mapping(BASE)
    read = settings_from_mapping({**BASE, **change})
    assert needing_restart(running, read) == named
