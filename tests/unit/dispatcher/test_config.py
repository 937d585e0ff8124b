"""One file for both: the receiver lets the ``dispatcher:`` section through unread, and only the
dispatcher's loader validates it, anchors its paths and knows what to keep out of its logs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from receiver.config import load_settings, settings_from_mapping
from receiver.dispatcher.config import (
    dispatcher_config_from_mapping,
    load_dispatcher_config,
    load_dispatcher_settings,
)
from receiver.errors import ConfigError


def test_the_receiver_does_not_validate_the_dispatcher_section() -> None:
    settings = settings_from_mapping({"dispatcher": {"attempts": 0, "no_such_key": True}})
    assert settings.dispatcher == {"attempts": 0, "no_such_key": True}


def test_the_dispatcher_loader_does(tmp_path: Path) -> None:
    path = tmp_path / "receiver.yaml"
    path.write_text(yaml.safe_dump({"dispatcher": {"attempts": 0}}))
    with pytest.raises(ConfigError, match=r"receiver\.yaml: dispatcher\.attempts: .*greater"):
        load_dispatcher_settings(path)
    path.write_text(yaml.safe_dump({"dispatcher": {"no_such_key": 1}}))
    with pytest.raises(ConfigError, match=r"dispatcher\.no_such_key: Extra inputs"):
        load_dispatcher_settings(path)
    path.write_text(yaml.safe_dump({"dispatcher": [1, 2]}))
    with pytest.raises(ConfigError, match="dispatcher: expected a mapping"):
        load_dispatcher_settings(path)


def test_the_dispatcher_reads_only_its_section_and_the_log_level(tmp_path: Path) -> None:
    path = tmp_path / "receiver.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "max_body_bytes": "not a number",  # the receiver's business
                "log_level": "WARNING",
                "dispatcher": {"attempts": 5, "database_url": "sqlite:///d.db"},
            }
        )
    )
    config = load_dispatcher_config(path)
    assert config.settings.attempts == 5
    assert config.log_level == "WARNING"
    # Relative paths are read next to the file, as the receiver's are.
    assert config.settings.database_url == f"sqlite:///{tmp_path.resolve() / 'd.db'}"
    with pytest.raises(ConfigError, match="max_body_bytes"):
        load_settings(path)
    path.write_text(yaml.safe_dump({"log_level": "LOUD"}))
    with pytest.raises(ConfigError, match="log_level"):
        load_dispatcher_config(path)


def test_env_values_and_client_tokens_are_kept_out_of_the_logs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SOURCE_TOKEN", "token-of-a-receiver-source")
    monkeypatch.setenv("CLIENT_TOKEN", "token-of-a-dispatcher-client")
    config = dispatcher_config_from_mapping(
        {
            "sources": {
                "pucomex": {"credentials": [{"type": "bearer", "token": "env:SOURCE_TOKEN"}]}
            },
            "dispatcher": {"clients": {"env:CLIENT_TOKEN": "erp"}},
        }
    )
    assert config.settings.clients == {"token-of-a-dispatcher-client": "erp"}
    assert set(config.secrets) == {"token-of-a-receiver-source", "token-of-a-dispatcher-client"}


def test_an_unset_variable_in_the_section_names_its_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    with pytest.raises(ConfigError, match=r"dispatcher\.database_url: environment variable"):
        dispatcher_config_from_mapping({"dispatcher": {"database_url": "env:NOT_SET_ANYWHERE"}})
