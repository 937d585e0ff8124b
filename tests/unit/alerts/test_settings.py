"""``alerts:`` in receiver.yaml: every rule on by default, null turns one off, and a wrong key
is one line naming it."""

from __future__ import annotations

from datetime import time
from typing import Any

import pytest

from receiver.config import settings_from_mapping
from receiver.errors import ConfigError

EMAIL = {"host": "smtp.example.gov.br", "sender": "receiver@example.gov.br", "to": ["ops@x.br"]}


def alerts(**section: Any) -> Any:
    return settings_from_mapping({"alerts": section}, origin="receiver.yaml").alerts


def test_defaults_turn_every_rule_on_with_thresholds_a_team_can_keep() -> None:
    settings = alerts()
    assert settings.enabled and settings.run_in == "serve" and settings.every_seconds == 60
    assert settings.subscription_failing_days == 3 and settings.oldest_pending_minutes == 15
    assert settings.dead_letters_minutes == 60 and settings.quarantined_minutes == 60
    assert settings.silence is not None
    assert settings.silence.timezone == "America/Sao_Paulo"
    assert settings.silence.weekday_numbers() == {0, 1, 2, 3, 4}
    assert (settings.silence.start, settings.silence.end) == (time(8), time(18))
    assert settings.webhook is None and settings.email is None


def test_null_turns_a_rule_off_and_hours_are_configurable() -> None:
    settings = alerts(
        silence={"minutes": 20, "weekdays": ["sat"], "start": "09:30", "end": "12:00"},
        oldest_pending_minutes=None,
    )
    assert settings.oldest_pending_minutes is None
    assert settings.silence is not None and settings.silence.weekday_numbers() == {5}
    assert settings.silence.start == time(9, 30)
    assert alerts(silence=None).silence is None


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"silence": {"timezone": "Mars/Olympus"}}, "alerts.silence.timezone"),
        ({"silence": {"start": "18:00", "end": "08:00"}}, "must be after start"),
        ({"silence": {"weekdays": []}}, "silence: null"),
        ({"silence": {"weekdays": ["someday"]}}, "alerts.silence.weekdays"),
        ({"subscription_failing_days": 31}, "alerts.subscription_failing_days"),
        ({"every_seconds": 0}, "alerts.every_seconds"),
        ({"run_in": "dispatcher"}, "alerts.run_in"),
        ({"webhook": {"url": "ftp://x"}}, "not an http(s) URL"),
        ({"webhook": {"url": "https://h.example", "secret": "plain"}}, "whsec_"),
        ({"webhook": {"url": "https://h.example", "allowed_networks": ["x"]}}, "not a CIDR"),
        ({"email": {**EMAIL, "to": []}}, "alerts.email.to"),
        ({"email": {**EMAIL, "sender": "nobody"}}, "not an e-mail address"),
        ({"email": {**EMAIL, "username": "u"}}, "set both or neither"),
        (
            {"email": {**EMAIL, "username": "u", "password": "p", "starttls": False}},
            "never sent in clear",
        ),
        ({"typo_minutes": 3}, "alerts.typo_minutes"),
    ],
)
def test_a_wrong_setting_is_one_line_naming_the_key(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        alerts(**section)
    text = str(raised.value)
    assert message in text and "\n" not in text and text.startswith("receiver.yaml")


def test_secrets_come_from_the_environment_and_are_kept_out_of_logs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ALERT_SMTP_PASSWORD", "smtp-senha-7f3e2d1c")
    monkeypatch.setenv("ALERT_HOOK_SECRET", "whsec_c2VjcmV0LWFsZXJ0LTEyMzQ=")
    settings = settings_from_mapping(
        {
            "alerts": {
                "email": {**EMAIL, "username": "u", "password": "env:ALERT_SMTP_PASSWORD"},
                "webhook": {"url": "https://h.example/a", "secret": "env:ALERT_HOOK_SECRET"},
            }
        },
        origin="receiver.yaml",
    )
    assert settings.alerts.email is not None and settings.alerts.email.password is not None
    assert settings.alerts.email.password.get_secret_value() == "smtp-senha-7f3e2d1c"
    assert "smtp-senha-7f3e2d1c" in settings.secrets()
    assert "whsec_c2VjcmV0LWFsZXJ0LTEyMzQ=" in settings.secrets()
