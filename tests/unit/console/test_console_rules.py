"""The console's pure rules: its section of receiver.yaml, passwords, the trusted proxy header,
the login limit, SVG charts that escape their labels, and ids read back as times."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from receiver.config import settings_from_mapping
from receiver.console.auth import LoginLimiter, check_password, from_proxy
from receiver.console.charts import bars
from receiver.consolesettings import ConsoleSettings
from receiver.errors import ConfigError
from receiver.ids import id_floor, id_time, new_id
from tests.console_support import OPERATOR_HASH, OPERATOR_PASSWORD, console_section


def console(**overrides: Any) -> ConsoleSettings:
    return ConsoleSettings.model_validate(console_section(**overrides))


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"users": []}, "list users"),
        (
            {"users": [{"name": "a", "password_hash": "plain", "role": "viewer"}]},
            "not an argon2 hash",
        ),
        ({"users": [{"name": "a b", "password_hash": OPERATOR_HASH}]}, "user name"),
        ({"users": [{"name": "a", "password_hash": OPERATOR_HASH, "role": "admin"}]}, "role"),
        (
            {"users": [{"name": "a", "password_hash": OPERATOR_HASH}] * 2},
            "listed twice",
        ),
        ({"users": [], "trusted_header": "X-User"}, "trusted_header_proxies"),
        (
            {"users": [], "trusted_header": "X-User", "trusted_header_proxies": ["0.0.0.0/0"]},
            "every address",
        ),
        (
            {"users": [], "trusted_header": "X User", "trusted_header_proxies": ["10.0.0.1/32"]},
            "header name",
        ),
        (console_section(session_secret="short"), "session_secret"),
        (console_section(listen="nowhere"), "HOST:PORT"),
        (console_section(surprise=1), "surprise"),
    ],
)
def test_a_wrong_console_section_is_one_line_naming_the_key(
    section: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        settings_from_mapping({"console": section}, origin="receiver.yaml")
    assert message in str(raised.value)
    assert str(raised.value).startswith("receiver.yaml")
    assert "\n" not in str(raised.value)


def test_the_session_secret_is_kept_out_of_logs() -> None:
    settings = settings_from_mapping({"console": console_section()}, origin="t")
    assert console_section()["session_secret"] in settings.secrets()


def test_passwords_are_checked_against_the_hash() -> None:
    settings = console()
    found = check_password(settings, "olivia", OPERATOR_PASSWORD)
    assert found is not None and found.role == "operator" and found.may_replay
    assert check_password(settings, "olivia", "wrong") is None
    assert check_password(settings, "nobody", OPERATOR_PASSWORD) is None


@pytest.mark.parametrize(
    ("peer", "value", "expected"),
    [
        ("10.1.2.3", "olivia", ("olivia", "operator")),
        ("10.1.2.3", "sam", ("sam", "viewer")),
        ("::ffff:10.1.2.3", "victor", ("victor", "viewer")),
        ("10.1.2.4", "olivia", None),  # not the proxy: the header is anyone's to forge
        ("10.1.2.3", "", None),
        ("10.1.2.3", "bad\x00name", None),
        ("not-an-address", "olivia", None),
        (None, "olivia", None),
    ],
)
def test_the_trusted_header_counts_only_from_the_proxy(
    peer: str | None, value: str, expected: tuple[str, str] | None
) -> None:
    settings = console(trusted_header="X-Forwarded-User", trusted_header_proxies=["10.1.2.3/32"])
    found = from_proxy(settings, peer, value)
    assert (None if found is None else (found.name, found.role)) == expected


def test_failed_logins_are_limited_per_address_and_per_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr("receiver.console.auth.time.monotonic", lambda: now[0])
    limiter = LoginLimiter(attempts=2, window=60)
    limiter.failed("203.0.113.1", "olivia")
    assert limiter.blocked("203.0.113.1", "olivia") == 0
    limiter.failed("203.0.113.1", "victor")
    assert limiter.blocked("203.0.113.1", "anyone") == 60  # this address: 2 failures
    limiter.failed("198.51.100.9", "olivia")
    assert limiter.blocked("192.0.2.1", "olivia") == 60  # this name: 2 failures, any address
    assert limiter.blocked("192.0.2.1", "someone") == 0
    now[0] += 61
    assert limiter.blocked("203.0.113.1", "olivia") == 0


def test_charts_escape_their_labels_and_use_no_style() -> None:
    svg = str(bars([1, 3], ["<b>", "x"], title="a<script>", marker=(1, "budget & more")))
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "&lt;b&gt;" in svg
    assert "style" not in svg
    assert "budget &amp; more" in svg


def test_ids_read_back_as_the_time_they_were_made() -> None:
    when = datetime(2026, 11, 30, 12, 34, 56, 789000, tzinfo=UTC)
    assert id_time(id_floor(when)) == when
    assert abs((id_time(new_id()) - datetime.now(UTC)).total_seconds()) < 5
