"""Reading a YAML settings file, for the receiver's ``Settings`` and the dispatcher's alike.

What every section shares: the frozen base that refuses unknown keys (``Section``), ``env:NAME``
values read from the environment and ``file:PATH`` values read from a file (a mounted secret), a
validation error told in one line naming the file and the key, and relative paths meaning "next
to that file", not "wherever I was started".
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from receiver.errors import ConfigError

SQLITE_PREFIX = "sqlite:///"


class Section(BaseModel):
    """A settings section: frozen once validated, and an unknown key is an error (a typo in a
    key would otherwise be a default silently kept)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


_MAPPED = ipaddress.ip_network("::ffff:0:0/96")


def check_networks(value: list[str]) -> list[str]:
    """A pydantic check for a list of CIDRs or addresses (IPv4-mapped IPv6 ranges refused: a
    mapped peer is matched against the IPv4 entries, and ``::ffff:0:0/96`` would admit every
    IPv4 address)."""
    for entry in value:
        try:
            network = ipaddress.ip_network(entry.strip(), strict=False)
        except ValueError:
            raise ValueError(f"{entry!r} is not a CIDR or an IP address") from None
        if network.version == 6 and network.overlaps(_MAPPED):
            raise ValueError(f"{entry!r} is an IPv4-mapped IPv6 range; write the IPv4 form")
    return value


def resolve_env(value: Any, path: str, origin: str, base_dir: Path | None = None) -> Any:
    """``value`` with every string ``env:NAME`` replaced by that environment variable and every
    ``file:PATH`` by that file's content, less one trailing newline (a mounted secret, such as
    ``/run/secrets/...``; a relative PATH is read next to the config file, ``base_dir``).

    ``path`` is the key of ``value`` in the file. A variable that is not set, a file that cannot
    be read, and an empty value are each a ConfigError naming the file and the key: an empty
    secret would admit anyone who sends an empty one, or fail later and further from its cause.
    """
    if isinstance(value, dict):
        return {
            key: resolve_env(item, f"{path}.{key}" if path else str(key), origin, base_dir)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [
            resolve_env(item, f"{path}.{index}", origin, base_dir)
            for index, item in enumerate(value)
        ]
    if isinstance(value, str) and value.startswith("env:"):
        name = value[4:]
        if name not in os.environ:
            raise ConfigError(f"{origin}: {path}: environment variable {name} is not set")
        if not os.environ[name]:
            raise ConfigError(f"{origin}: {path}: environment variable {name} is empty")
        return os.environ[name]
    if isinstance(value, str) and value.startswith("file:"):
        return _read_secret_file(value[5:], path, origin, base_dir)
    return value


def _read_secret_file(name: str, key: str, origin: str, base_dir: Path | None) -> str:
    file = Path(name)
    if base_dir is not None:
        file = anchor(file, base_dir)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{origin}: {key}: file {file} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{origin}: {key}: {file} is a folder, not a file") from None
    except PermissionError:
        raise ConfigError(
            f"{origin}: {key}: file {file} cannot be read (permission denied)"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{origin}: {key}: file {file} is not UTF-8 text") from None
    except OSError as error:
        raise ConfigError(
            f"{origin}: {key}: file {file} cannot be read: {error.strerror}"
        ) from None
    # What `echo secret > file` and most secret stores write: one line end, not part of it.
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    if not text:
        raise ConfigError(f"{origin}: {key}: file {file} is empty")
    return text


def describe(error: ValidationError, origin: str, prefix: str = "") -> str:
    """The first validation error in one line: ``origin: key: message (and N more)``."""
    first = error.errors()[0]
    key = prefix + ".".join(str(part) for part in first["loc"]) or "(top level)"
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{origin}: {key}: {first['msg']}{more}"


def read_yaml(file: Path) -> Any:
    """The YAML document in ``file``; ConfigError (one line, naming the file) when it cannot be
    read or parsed."""
    origin = str(file)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{origin}: file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{origin}: cannot be read: {error}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "(top level)"
        raise ConfigError(f"{origin}: {where}: not valid YAML") from None


def top_level_mapping(raw: Any, origin: str) -> dict[str, Any]:
    """A document's top level, which must be a mapping of keys (an empty file is no keys)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{origin}: (top level): expected a mapping of keys, got {type(raw).__name__}"
        )
    return raw


def anchor(path: Path, base_dir: Path) -> Path:
    """A relative path in a config file, read next to the file."""
    return path if path.is_absolute() else base_dir / path


def anchor_database_url(url: str, base_dir: Path) -> str:
    """A relative SQLite file in a database URL, read next to the config file."""
    relative = url.startswith(SQLITE_PREFIX) and not url.startswith(SQLITE_PREFIX + "/")
    if relative and url != SQLITE_PREFIX + ":memory:":
        return SQLITE_PREFIX + str(base_dir / url[len(SQLITE_PREFIX) :])
    return url
