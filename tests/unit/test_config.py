"""Settings: defaults, env: secrets, and one clear line naming file and key when wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from receiver.config import Settings, load_settings, settings_from_mapping
from receiver.credentials import BearerCredential
from receiver.errors import ConfigError
from receiver.runtime.startup import startup_warnings


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


# --- the Portal's secret and what serve warns about --------------------------------------------

CHAVE = "0484a6e22cf66a2d3da8953789f8c6b3"


def _pucomex(*credentials: dict[str, str], **portal: str) -> Settings:
    raw: dict[str, object] = {"sources": {"pucomex": {"credentials": list(credentials)}}}
    if portal:
        raw["portal"] = portal
    return settings_from_mapping(raw)


@pytest.mark.parametrize(
    ("credential", "kind"),
    [
        ({"type": "bearer", "token": "t0k3n"}, "bearer"),
        ({"type": "basic", "username": "portal", "password": "p"}, "basic"),
    ],
)
def test_basic_or_bearer_on_pucomex_is_warned_about(credential: dict[str, str], kind: str) -> None:
    warnings = startup_warnings(_pucomex(credential))
    assert len(warnings) == 1
    assert f"sources.pucomex has {kind} credentials, which the Portal cannot send" in warnings[0]
    assert "{type: header, name: secret" in warnings[0]


def test_the_readme_way_gives_no_warning() -> None:
    settings = _pucomex(
        {"type": "header", "name": "secret", "value": CHAVE},
        base_url="https://p",
        chave_secreta=CHAVE,
    )
    assert startup_warnings(settings) == []
    assert CHAVE in settings.secrets()


def test_basic_on_other_sources_is_fine() -> None:
    settings = settings_from_mapping(
        {"sources": {"sintegre": {"credentials": [{"type": "bearer", "token": "t"}]}}}
    )
    assert startup_warnings(settings) == []


def test_a_short_or_unchecked_chave_secreta_is_warned_about() -> None:
    short = _pucomex({"type": "header", "name": "secret", "value": "abc"}, chave_secreta="abc")
    assert [w for w in startup_warnings(short) if "3 characters" in w]
    unchecked = _pucomex(chave_secreta=CHAVE)
    assert [w for w in startup_warnings(unchecked) if "checks no credentials" in w]
    other = _pucomex(
        {"type": "header", "name": "secret", "value": CHAVE[::-1]}, chave_secreta=CHAVE
    )
    assert [w for w in startup_warnings(other) if "not among the values" in w]


@pytest.mark.parametrize(
    ("aliases", "message"),
    [
        ({"pucomex": {"dimp registro": "duimp.registro"}}, "is not an event id"),
        ({"pucomex": {"dimp-*": "duimp.registro"}}, "is not an event id"),
        ({"pucomex": {"a": "a"}}, "alias of itself"),
        ({"pucomex": {"a": "b", "b": "c"}}, "both an alias and a target"),
    ],
)
def test_event_aliases_are_checked(aliases: dict[str, dict[str, str]], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings_from_mapping({"events": {"aliases": aliases}})


def test_the_example_configuration_protects_pucomex_as_the_readme_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("PUCOMEX_CHAVE_SECRETA", "SINTEGRE_PASSWORD", "SINTEGRE_TOKEN"):
        monkeypatch.setenv(name, f"{name.lower()}-0484a6e22cf66a2d")
    settings = load_settings(Path(__file__).parents[2] / "examples" / "receiver.yaml")
    [credential] = settings.sources["pucomex"].credentials
    assert (credential.type, getattr(credential, "name", None)) == ("header", "secret")
    assert startup_warnings(settings) == []


def test_the_server_section_holds_the_http_options() -> None:
    server = settings_from_mapping({}).server
    assert (server.limit_concurrency, server.timeout_keep_alive_seconds) == (4096, 5)
    assert (server.header_timeout_seconds, server.read_timeout_seconds) == (10.0, 10.0)
    assert (server.max_header_bytes, server.max_header_count) == (32_768, 100)
    with pytest.raises(ConfigError, match=r"^test: server\.max_header_bytes: .*greater"):
        settings_from_mapping({"server": {"max_header_bytes": 10}}, origin="test")
    with pytest.raises(ConfigError, match=r"^test: server\.monitoring_addresses: .*not a CIDR"):
        settings_from_mapping({"server": {"monitoring_addresses": ["nowhere"]}}, origin="test")
    # Issue 16's keys were never released at the top level: they are unknown there.
    with pytest.raises(ConfigError, match=r"^test: max_header_bytes: Extra inputs"):
        settings_from_mapping({"max_header_bytes": 32_768}, origin="test")


@pytest.mark.parametrize(("key", "value"), [("limit_concurrency", 20), ("read_timeout_seconds", 3)])
def test_the_previous_release_top_level_keys_still_work_with_a_warning(
    key: str, value: int, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_from_mapping({key: value}, origin="old.yaml")
    assert getattr(settings.server, key) == value
    [record] = [r for r in caplog.records if r.name == "receiver.config"]
    assert record.levelname == "WARNING"
    assert record.getMessage() == (
        f"old.yaml: {key} at the top level is deprecated; write it as server.{key}"
    )
    with pytest.raises(ConfigError, match=f"{key} is given twice"):
        settings_from_mapping({key: value, "server": {key: value}}, origin="old.yaml")


def test_the_new_spot_gives_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    settings = settings_from_mapping({"server": {"limit_concurrency": 20}})
    assert settings.server.limit_concurrency == 20
    assert not [r for r in caplog.records if r.name == "receiver.config"]


def test_file_secrets_are_read_next_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "chave").write_text("0484a6e22cf66a2d3da8953789f8c6b3\n")
    (tmp_path / "receiver.yaml").write_text(
        "sources:\n  pucomex:\n    credentials:\n"
        "      - {type: header, name: secret, value: 'file:secrets/chave'}\n"
    )
    settings = load_settings(tmp_path / "receiver.yaml")
    (credential,) = settings.sources["pucomex"].credentials
    assert credential.value.get_secret_value() == "0484a6e22cf66a2d3da8953789f8c6b3"  # type: ignore[union-attr]
    assert settings.origin == str(tmp_path / "receiver.yaml")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "is empty"),
        (b"\n", "is empty"),
        (b"\xff\xfe", "is not UTF-8"),
        (None, "does not exist"),
    ],
)
def test_a_file_secret_that_cannot_be_used_names_file_and_key(
    tmp_path: Path, content: bytes | None, expected: str
) -> None:
    if content is not None:
        (tmp_path / "chave").write_bytes(content)
    (tmp_path / "r.yaml").write_text("database_url: file:chave\n")
    with pytest.raises(ConfigError, match=f"r.yaml: database_url: file .*chave {expected}"):
        load_settings(tmp_path / "r.yaml")


@pytest.mark.parametrize("listen", ["127.0.0.1:9464", "[::1]:0", "localhost:8080", "0.0.0.0:65535"])
def test_listen_addresses(listen: str) -> None:
    assert settings_from_mapping({"admin_listen": listen}).admin_listen == listen


@pytest.mark.parametrize("listen", ["9464", "127.0.0.1", "127.0.0.1:65536", "::1:9464", "a b:1"])
def test_bad_listen_addresses_are_refused(listen: str) -> None:
    with pytest.raises(ConfigError, match="admin_listen"):
        settings_from_mapping({"admin_listen": listen}, origin="x.yaml")
