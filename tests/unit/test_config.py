"""Settings: defaults, env: secrets, and one clear line naming file and key when wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from receiver.config import BearerCredential, load_settings, settings_from_mapping
from receiver.errors import ConfigError


def test_every_key_has_a_default() -> None:
    settings = load_settings(None)
    assert settings.database_url == "sqlite:///receiver.db"
    assert settings.max_body_bytes == 1_048_576
    assert set(settings.sources) == {"pucomex", "sintegre", "invoicy"}
    assert settings.retry.max_attempts == 8


def test_env_secret_is_read_and_never_shown(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PUCOMEX_TOKEN", "s3cr3t-token-value")
    file = tmp_path / "receiver.yaml"
    file.write_text(
        "sources:\n  pucomex:\n    credentials:\n      - {type: bearer, token: env:PUCOMEX_TOKEN}\n"
    )
    settings = load_settings(file)
    [credential] = settings.sources["pucomex"].credentials
    assert isinstance(credential, BearerCredential)
    assert credential.token.get_secret_value() == "s3cr3t-token-value"
    assert "s3cr3t" not in repr(settings)
    assert settings.secrets() == ["s3cr3t-token-value"]


def test_missing_env_names_the_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NOPE_TOKEN", raising=False)
    file = tmp_path / "r.yaml"
    file.write_text(
        "sources:\n  pucomex:\n    credentials:\n      - {type: bearer, token: env:NOPE_TOKEN}\n"
    )
    with pytest.raises(ConfigError) as error:
        load_settings(file)
    assert str(error.value) == (
        f"{file}: sources.pucomex.credentials.0.token: environment variable NOPE_TOKEN is not set"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("max_body_bytes: lots\n", "max_body_bytes: Input should be a valid integer"),
        (
            "sources:\n  pucomex:\n    credentials:\n      - {type: digest}\n",
            "sources.pucomex.credentials.0",
        ),
        ("trusted_proxies: ['*']\n", "trusted_proxies: Value error, trusting every proxy"),
        ("surprise: 1\n", "surprise: Extra inputs are not permitted"),
        ("- a list\n", "(top level): expected a mapping"),
        ("key: [unclosed\n", "line 2: not valid YAML"),
        ("retry: {max_attempts: 0}\n", "retry.max_attempts"),
    ],
)
def test_invalid_file_gives_one_line_with_file_and_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    file = tmp_path / "receiver.yaml"
    file.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_settings(file)
    message = str(error.value)
    assert message.startswith(f"{file}: ")
    assert expected in message
    assert "\n" not in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "absent.yaml")


def test_config_env_variable_names_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    file = tmp_path / "r.yaml"
    file.write_text("max_body_bytes: 100\n")
    monkeypatch.setenv("RECEIVER_CONFIG", str(file))
    assert load_settings().max_body_bytes == 100


def test_relative_paths_are_read_next_to_the_file(tmp_path: Path) -> None:
    file = tmp_path / "conf" / "receiver.yaml"
    file.parent.mkdir()
    file.write_text("database_url: sqlite:///data/r.db\nallowlist: allow.yaml\n")
    settings = load_settings(file)
    assert settings.allowlist == file.parent / "allow.yaml"
    assert settings.database_url == f"sqlite:///{file.parent / 'data/r.db'}"


def test_basic_username_cannot_hold_a_colon() -> None:
    with pytest.raises(ConfigError, match="cannot contain ':'"):
        settings_from_mapping(
            {
                "sources": {
                    "s": {"credentials": [{"type": "basic", "username": "a:b", "password": "p"}]}
                }
            }
        )
