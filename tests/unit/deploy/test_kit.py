"""The deployment kit in deploy/, read as files: no container engine runs on these machines, so
the Dockerfile and the compose file are checked here for what `docker build` and `docker compose
config` cannot say anyway (non-root, pinned images, no secret baked in, the migration ordering);
the systemd units for their hardening; and the nginx site's limits against the receiver's."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).parents[3]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
COMPOSE = DEPLOY / "docker" / "compose.yaml"
SYSTEMD = DEPLOY / "systemd"
UNITS = ("receiver-serve.service", "receiver-worker.service", "receiver-migrate.service")
NGINX_SITE = DEPLOY / "nginx" / "receiver.conf"
CONFIG = DEPLOY / "receiver.yaml"
# worker.handler_timeout_seconds's default (README, "Signals"): stopping must wait longer.
HANDLER_TIMEOUT_SECONDS = 60
# The receiver's keep-alive (uvicorn's timeout_keep_alive in `receiver serve`).
RECEIVER_KEEP_ALIVE_SECONDS = 5
# The Portal counts an answer slower than this as a failed attempt.
PORTAL_BUDGET_SECONDS = 3.5
SECRET_WORDS = re.compile(r"SECRET|PASSWORD|TOKEN|CHAVE|PRIVATE|_KEY\b|PFX", re.IGNORECASE)


# --- Dockerfile --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def dockerfile(text: str) -> list[Instruction]:
    """The instructions, continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1].rstrip() + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    """Instructions per stage; the ARGs before the first FROM are stage 0's own list."""
    result: list[list[Instruction]] = [[]]
    for instruction in instructions:
        if instruction.keyword == "FROM":
            result.append([])
        result[-1].append(instruction)
    return result


def global_args(instructions: list[Instruction]) -> dict[str, str]:
    args: dict[str, str] = {}
    for instruction in instructions:
        if instruction.keyword == "FROM":
            break
        if instruction.keyword == "ARG":
            name, _, default = instruction.arguments.partition("=")
            args[name] = default
    return args


def base_images(instructions: list[Instruction]) -> list[str]:
    args = global_args(instructions)
    images = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            image = instruction.arguments.split()[0]
            images.append(re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m[1] or m[2]], image))
    return images


def assert_pinned(image: str) -> None:
    """name:tag with a version in the tag (or a digest); never a bare name or "latest"."""
    name, _, tag = image.partition("@")[0].rpartition(":")
    assert name and "/" not in tag, f"{image}: no tag (that is 'latest')"
    assert tag != "latest" and re.match(r"\d+(\.\d+)*", tag), f"{image}: not a pinned release"


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return dockerfile(DOCKERFILE.read_text())


def test_the_dockerfile_parser_reads_continuations_and_skips_comments() -> None:
    parsed = dockerfile("# c\nARG A=x\nFROM $A AS b\nRUN one \\\n  # inner\n  two\nUSER 1:1\n")
    assert parsed == [
        Instruction("ARG", "A=x"),
        Instruction("FROM", "$A AS b"),
        Instruction("RUN", "one two"),
        Instruction("USER", "1:1"),
    ]
    assert base_images(parsed) == ["x"]


def test_the_image_runs_as_a_user_that_is_not_root(instructions: list[Instruction]) -> None:
    final = stages(instructions)[-1]
    users = [i for i, instruction in enumerate(final) if instruction.keyword == "USER"]
    assert users, "the final stage never leaves root"
    user = final[users[-1]].arguments.split(":")[0]
    assert user not in {"root", "0"}
    starts = [
        i for i, instruction in enumerate(final) if instruction.keyword in {"CMD", "ENTRYPOINT"}
    ]
    assert starts and min(starts) > users[-1], "USER must come before what the container runs"
    # Nothing after USER needs root (a RUN there would fail or, worse, be moved above it).
    assert all(instruction.keyword != "RUN" for instruction in final[users[-1] :])


def test_base_images_are_pinned_releases(instructions: list[Instruction]) -> None:
    images = base_images(instructions)
    assert len(images) == 2
    for image in images:
        assert_pinned(image)
        assert image.startswith("python:3.11") and "slim" in image
    assert images[0] == images[1], "the virtualenv is built on the Python it runs on"


def test_the_healthcheck_asks_the_admin_listener(instructions: list[Instruction]) -> None:
    (check,) = [i for i in instructions if i.keyword == "HEALTHCHECK"]
    options, _, command = check.arguments.partition("CMD ")
    assert "--interval=" in options and "--timeout=" in options
    argv = json.loads(command)  # exec form: no shell in the way
    assert argv[:2] == ["python", "-c"]
    assert "'127.0.0.1', 9464" in argv[2] and "'/healthz'" in argv[2]


def test_the_package_is_installed_from_the_project_without_dev_extras(
    instructions: list[Instruction],
) -> None:
    build = stages(instructions)[1]
    copied = [
        source
        for instruction in build
        if instruction.keyword == "COPY"
        for source in shlex.split(instruction.arguments)[:-1]
    ]
    assert sorted(copied) == ["README.md", "handlers/", "pyproject.toml", "receiver/"]
    runs = " ".join(i.arguments for i in build if i.keyword == "RUN")
    assert re.search(r"/opt/receiver/bin/pip install \.(\s|$)", runs)
    assert "-e " not in runs and "[dev]" not in runs and "--editable" not in runs
    final = stages(instructions)[-1]
    assert Instruction("COPY", "--from=build /opt/receiver /opt/receiver") in final
    assert any(
        i.keyword == "ENV" and "RECEIVER_CONFIG=/etc/receiver/receiver.yaml" in i.arguments
        for i in final
    )
    assert Instruction("ENTRYPOINT", '["receiver"]') in final
    (cmd,) = [json.loads(i.arguments) for i in final if i.keyword == "CMD"]
    assert cmd[0] == "serve"


def test_the_build_context_admits_only_what_the_image_copies(
    instructions: list[Instruction],
) -> None:
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
    rules = [line for line in ignore if line and not line.startswith("#")]
    assert rules[0] == "*", "everything is left out unless admitted"
    admitted = {rule[1:] for rule in rules if rule.startswith("!")}
    assert admitted == {"pyproject.toml", "README.md", "receiver/", "handlers/"}


def test_no_secret_is_baked_into_the_image(instructions: list[Instruction]) -> None:
    for instruction in instructions:
        if instruction.keyword in {"ENV", "ARG", "LABEL"}:
            assert not SECRET_WORDS.search(instruction.arguments), instruction
        assert instruction.keyword != "ADD", "ADD fetches and unpacks: COPY what is meant"
        if instruction.keyword == "COPY":
            assert not re.search(
                r"\.env|\.pem|\.key|\.pfx|\.p12|\.db|\.yaml", instruction.arguments
            )


# --- compose -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())  # merges the x-receiver anchor
    return loaded


def test_compose_has_postgres_migrate_serve_and_worker(compose: dict[str, Any]) -> None:
    assert set(compose) <= {"name", "services", "secrets", "networks", "volumes"} | {
        key for key in compose if key.startswith("x-")
    }
    assert set(compose["services"]) == {"db", "migrate", "serve", "worker"}


def test_postgres_keeps_its_data_in_a_volume_and_reports_health(compose: dict[str, Any]) -> None:
    db = compose["services"]["db"]
    assert_pinned(db["image"])
    assert db["image"].startswith("postgres:")
    (volume,) = db["volumes"]
    name, _, target = volume.partition(":")
    assert target == "/var/lib/postgresql/data" and name in compose["volumes"]
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    # The password reaches PostgreSQL as a compose secret, never written in the file.
    assert db["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert db["secrets"] == ["postgres_password"]
    assert compose["secrets"]["postgres_password"] == {"environment": "POSTGRES_PASSWORD"}


def test_the_schema_is_upgraded_once_before_serve_and_worker_start(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    migrate = services["migrate"]
    assert migrate["command"] == ["db", "upgrade"]
    assert migrate["restart"] == "no"  # a one-shot: restarted, it would never "complete"
    assert migrate["depends_on"] == {"db": {"condition": "service_healthy"}}
    for name in ("serve", "worker"):
        assert services[name]["depends_on"] == {
            "migrate": {"condition": "service_completed_successfully"}
        }, name


def test_serve_is_ingest_only_on_loopback_and_worker_runs_the_handlers(
    compose: dict[str, Any],
) -> None:
    serve, worker = compose["services"]["serve"], compose["services"]["worker"]
    assert serve["command"][0] == "serve" and "--no-worker" in serve["command"]
    assert serve["ports"] == ["127.0.0.1:8000:8000"]  # nginx on the host is the way in
    # Its admin listener where the image's health check asks (alone in its container).
    assert worker["command"] == ["worker", "--admin-listen", "127.0.0.1:9464"]
    assert "ports" not in worker
    assert "healthcheck" not in worker


def test_every_receiver_container_is_built_from_the_project_and_locked_down(
    compose: dict[str, Any],
) -> None:
    for name in ("migrate", "serve", "worker"):
        service = compose["services"][name]
        context = (COMPOSE.parent / service["build"]["context"]).resolve()
        assert context == ROOT.resolve(), name
        assert (context / service["build"]["dockerfile"]).resolve() == DOCKERFILE.resolve()
        assert_pinned(service["image"])
        assert service["init"] is True and service["read_only"] is True
        assert service["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in service["security_opt"]
        assert parse_seconds(service["stop_grace_period"]) > HANDLER_TIMEOUT_SECONDS
        mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in service["volumes"]}
        assert (COMPOSE.parent / mounts["/etc/receiver/receiver.yaml"]).resolve() == CONFIG
        assert (COMPOSE.parent / mounts["/etc/receiver/allowlist.yaml"]).resolve() == (
            ROOT / "allowlist.yaml"
        )
        assert mounts["/var/lib/receiver"] in compose["volumes"]


def test_compose_writes_no_secret_and_trusts_only_its_gateway(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for key, value in service.get("environment", {}).items():
            if SECRET_WORDS.search(key) or "://" in str(value):
                assert "${" in str(value) or str(value).startswith("/run/secrets/"), (name, key)
    (network,) = compose["networks"]["receiver"]["ipam"]["config"]
    proxy = compose["services"]["serve"]["environment"]["RECEIVER_TRUSTED_PROXY"]
    assert proxy == network["gateway"], "nginx on the Docker host connects from the gateway"


def parse_seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|min|m)?", value)
    assert match, value
    factor = {"ms": 0.001, "s": 1, "min": 60, "m": 60, None: 1}[match[2]]
    return float(match[1]) * factor


# --- systemd -----------------------------------------------------------------------------------


def unit_file(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Section -> its (key, value) lines in order (keys may repeat, as systemd allows)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        key, equals, value = line.partition("=")
        assert current is not None and equals, f"{path.name}: {line!r}"
        current.append((key.strip(), value.strip()))
    return sections


def directives(path: Path) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for key, value in unit_file(path)["Service"]:
        values.setdefault(key, []).append(value)
    return values


HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "SystemCallFilter": "@system-service",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "StateDirectory": "receiver",
    "User": "receiver",
}


@pytest.mark.parametrize("unit", UNITS)
def test_every_unit_is_hardened(unit: str) -> None:
    service = directives(SYSTEMD / unit)
    for key, value in HARDENING.items():
        assert service.get(key) == [value], f"{unit}: {key}={value}"
    assert service["Environment"] == ["RECEIVER_CONFIG=/etc/receiver/receiver.yaml"]
    assert service["EnvironmentFile"][0] == "/etc/receiver/receiver.env"
    assert service["ExecStart"][0].startswith("/opt/receiver/bin/receiver ")


@pytest.mark.parametrize("unit", UNITS[:2])
def test_serve_and_worker_restart_drain_and_wait_for_the_migration(unit: str) -> None:
    sections = unit_file(SYSTEMD / unit)
    service = directives(SYSTEMD / unit)
    assert service["Restart"] == ["on-failure"] and parse_seconds(service["RestartSec"][0]) > 0
    assert service["RestartPreventExitStatus"] == ["2"]  # a configuration error: fix, not retry
    assert service["KillSignal"] == ["SIGTERM"]
    # SIGTERM to the main process alone: serve stops its writer process itself after the drain.
    assert service["KillMode"] == ["mixed"]
    assert parse_seconds(service["TimeoutStopSec"][0]) > HANDLER_TIMEOUT_SECONDS
    unit_section = dict(sections["Unit"])
    assert unit_section["Requires"] == "receiver-migrate.service"
    assert "receiver-migrate.service" in unit_section["After"].split()


def test_serve_reloads_on_sighup_and_listens_on_loopback_behind_nginx() -> None:
    service = directives(SYSTEMD / "receiver-serve.service")
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    argv = shlex.split(service["ExecStart"][0])
    assert argv[1] == "serve" and "--no-worker" in argv
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert directives(SYSTEMD / "receiver-worker.service")["ExecStart"] == [
        "/opt/receiver/bin/receiver worker"
    ]


def test_the_migration_is_a_one_shot_db_upgrade() -> None:
    service = directives(SYSTEMD / "receiver-migrate.service")
    assert service["Type"] == ["oneshot"]
    # Not RemainAfterExit: then every start of serve or worker runs it again (a no-op when the
    # schema is current), e.g. after the package was upgraded.
    assert "RemainAfterExit" not in service
    assert service["ExecStart"] == ["/opt/receiver/bin/receiver db upgrade"]
    assert service["EnvironmentFile"] == [
        "/etc/receiver/receiver.env",
        "-/etc/receiver/migrate.env",
    ]


def test_the_sysusers_file_makes_the_units_user() -> None:
    lines = [
        line.split()
        for line in (SYSTEMD / "receiver.sysusers").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert len(lines) == 1
    assert lines[0][:3] == ["u", "receiver", "-"]
    assert lines[0][-1] == "/usr/sbin/nologin"


# --- nginx against the receiver's configuration ------------------------------------------------


def nginx_directive(name: str, text: str) -> list[str]:
    return re.findall(rf"^\s*{name}\s+([^;]+);", text, re.MULTILINE)


def size_bytes(value: str) -> int:
    match = re.fullmatch(r"(\d+)([kKmM]?)", value)
    assert match, value
    return int(match[1]) * {"": 1, "k": 1024, "m": 1 << 20}[match[2].lower()]


def test_nginx_limits_match_the_receivers() -> None:
    site = NGINX_SITE.read_text()
    config = yaml.safe_load(CONFIG.read_text())
    (body,) = nginx_directive("client_max_body_size", site)
    assert size_bytes(body) == config["max_body_bytes"]
    (buffers,) = nginx_directive("large_client_header_buffers", site)
    count, size = buffers.split()
    assert int(count) * size_bytes(size) == config["server"]["max_header_bytes"]
    (read_timeout,) = nginx_directive("proxy_read_timeout", site)
    # Above the receiver's own deadline (its 503 must get through), below the Portal's budget.
    assert config["ack_timeout_seconds"] < parse_seconds(read_timeout) < PORTAL_BUDGET_SECONDS
    (keepalive,) = nginx_directive("keepalive_timeout", site.split("server {")[0])
    assert parse_seconds(keepalive) < RECEIVER_KEEP_ALIVE_SECONDS
    assert nginx_directive("ssl_protocols", site) == ["TLSv1.2 TLSv1.3"]
    assert nginx_directive("proxy_set_header X-Forwarded-For", site) == ["$remote_addr"]
    assert nginx_directive("proxy_request_buffering", site) == ["on"]
    assert nginx_directive("proxy_http_version", site) == ["1.1"]
    locations = nginx_directive("location", site.replace("{", ";"))
    assert [location.strip() for location in locations] == ["/webhooks/", "/"]


def test_the_example_configuration_reads_its_secrets_from_the_environment() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    assert config["database_url"] == "env:RECEIVER_DATABASE_URL"
    assert config["trusted_proxies"] == ["env:RECEIVER_TRUSTED_PROXY"]
    (credential,) = config["sources"]["pucomex"]["credentials"]
    assert credential == {"type": "header", "name": "secret", "value": "env:PUCOMEX_CHAVE_SECRETA"}
    assert config["store_dir"].startswith("/var/lib/receiver/")


def test_every_variable_the_configuration_reads_is_provided(compose: dict[str, Any]) -> None:
    """What receiver.yaml reads as env:NAME is in the systemd units' environment file and in
    every receiver container's environment: a start never fails on a variable left out."""
    wanted = set(environment_names(yaml.safe_load(CONFIG.read_text())))
    assert wanted >= {"RECEIVER_DATABASE_URL", "PUCOMEX_CHAVE_SECRETA"}
    example = (DEPLOY / "receiver.env.example").read_text()
    provided = set(re.findall(r"^(\w+)=", example, re.MULTILINE))
    assert wanted <= provided, sorted(wanted - provided)
    for name in ("migrate", "serve", "worker"):
        environment = set(compose["services"][name]["environment"])
        assert wanted <= environment, (name, sorted(wanted - environment))


def environment_names(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for item in value.values():
            yield from environment_names(item)
    elif isinstance(value, list):
        for item in value:
            yield from environment_names(item)
    elif isinstance(value, str) and value.startswith("env:"):
        yield value[4:]
