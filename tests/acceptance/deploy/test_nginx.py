"""deploy/nginx/receiver.conf, run by the real nginx from Debian's packages in front of a real
`receiver serve`, over real sockets and TLS (trustme certificates): an allowlisted client is
stored with its own address, another is refused even when it forges X-Forwarded-For, only the
webhook routes are reachable, TLS below 1.2 is refused, nginx's header, body and timeout limits
stand in front of the receiver's, and the receiver's own 503 passes unchanged. Clients bind
127.0.0.2 (allowlisted) or 127.0.0.3 (not); nginx reaches the receiver from 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
import yaml

from tests.acceptance.conftest import ROOT, Deployment, free_port
from tests.acceptance.store.test_writer_process import writer_of

pytestmark = pytest.mark.acceptance

SITE = ROOT / "deploy" / "nginx" / "receiver.conf"
ALLOWED = "127.0.0.2"  # in pucomex's allowlist
REFUSED = "127.0.0.3"  # in no allowlist
SECRET = "9f2c4e6a8b0d1f3e5a7c9e1b3d5f7a90"  # the Portal's chaveSecreta, sent in `secret`
EVENT = "dimp-situacao-import"

# What the shipped site says, and what the test puts in its place (nothing else differs).
SHIPPED = {
    "listen": "listen 443 ssl;",
    "listen6": "listen [::]:443 ssl;",
    "upstream": "server 127.0.0.1:8000;",
    "certificate": "ssl_certificate /etc/receiver/tls/fullchain.pem;",
    "key": "ssl_certificate_key /etc/receiver/tls/privkey.pem;",
}


def render_site(text: str, port: int, upstream_port: int, cert: Path, key: Path) -> str:
    """The shipped site with this machine's ports and certificate paths; each value must be
    found exactly once, so a change to the shipped file cannot leave a value unrendered."""
    values = {
        "listen": f"listen 127.0.0.1:{port} ssl;",
        "listen6": f"listen [::1]:{port} ssl;",
        "upstream": f"server 127.0.0.1:{upstream_port};",
        "certificate": f"ssl_certificate {cert};",
        "key": f"ssl_certificate_key {key};",
    }
    for name, shipped in SHIPPED.items():
        lines = [line for line in text.splitlines() if line.strip() == shipped]
        assert len(lines) == 1, f"{SITE} should say {shipped!r} once, found {len(lines)}"
        text = text.replace(shipped, values[name])
    return text


def main_config(folder: Path, site: Path) -> str:
    """nginx.conf around the site: everything nginx writes stays under ``folder``."""
    temp = {name: folder / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for path in temp.values():
        path.mkdir()
    # Run as root (CI, these machines), nginx's workers would switch to `nobody`, which cannot
    # enter pytest's private temporary folders to buffer bodies: keep them as the test's user.
    user = "user root root;" if os.geteuid() == 0 else ""
    return f"""
{user}
worker_processes 1;
pid {folder / "nginx.pid"};
error_log {folder / "error.log"} notice;
events {{ worker_connections 256; }}
http {{
    access_log {folder / "access.log"};
    client_body_temp_path {temp["body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    include {site};
}}
"""


def nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("nginx is missing in CI: .ci/run installs it with apt-get (nginx-light)")
        pytest.skip("nginx is not installed: apt-get install nginx-light (.ci/run does it in CI)")
    return found


@dataclass
class Stack:
    deployment: Deployment
    receiver_port: int
    port: int  # nginx's TLS port
    ca: trustme.CA

    def context(self, version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.ca.configure_trust(ctx)
        if version is not None:
            # Offer only this version; below 1.2 OpenSSL needs its security level lowered to
            # offer it at all, so that the refusal seen is nginx's, not this client's.
            with warnings.catch_warnings():  # TLS 1.1 is deprecated: that is what is tested
                warnings.simplefilter("ignore", DeprecationWarning)
                ctx.minimum_version = ctx.maximum_version = version
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        return ctx

    def client(self, address: str) -> httpx.Client:
        transport = httpx.HTTPTransport(verify=self.context(), local_address=address)
        return httpx.Client(
            transport=transport, base_url=f"https://127.0.0.1:{self.port}", timeout=10
        )

    def stored(self) -> list[dict[str, Any]]:
        listed = self.deployment.cli("inbox", "list", "--json", "--source", "pucomex", CHAVE=SECRET)
        assert listed.returncode == 0, listed.stderr
        return [json.loads(line) for line in listed.stdout.splitlines()]


def start_nginx(binary: str, folder: Path, port: int) -> subprocess.Popen[bytes]:
    conf = folder / "nginx.conf"
    output = open(folder / "nginx.out", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [binary, "-p", str(folder), "-c", str(conf), "-g", "daemon off;"],
        stdout=output,
        stderr=subprocess.STDOUT,
    )
    output.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = (folder / "nginx.out").read_text(errors="replace")
            raise AssertionError(f"nginx exited with {process.returncode}: {log}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return process
        time.sleep(0.02)
    process.kill()
    raise AssertionError("nginx did not listen within 10 s")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    binary = nginx_binary()
    folder: Path = tmp_path_factory.mktemp("nginx")
    (folder / "deploy-allowlist.yaml").write_text(
        yaml.safe_dump({"pucomex": [f"{ALLOWED}/32"], "sintegre": [], "invoicy": []})
    )
    deployment = Deployment(
        folder,
        f"sqlite:///{folder / 'receiver.db'}",
        allowlist="deploy-allowlist.yaml",
        trusted_proxies=["127.0.0.1"],
        sources={
            "pucomex": {
                "credentials": [{"type": "header", "name": "secret", "value": "env:CHAVE"}]
            },
            "sintegre": {"credentials": []},
            "invoicy": {"credentials": []},
        },
        handlers=[],
        # Shorter than the slow sender's pause below: only nginx's buffering lets it through.
        read_timeout_seconds=0.5,
    )
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "::1", "localhost")
    cert.private_key_pem.write_to_path(str(folder / "key.pem"))
    cert_path = folder / "chain.pem"
    cert_path.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    receiver_port, port = free_port(), free_port()
    site = folder / "receiver.conf"
    site.write_text(
        render_site(SITE.read_text(), port, receiver_port, cert_path, folder / "key.pem")
    )
    (folder / "nginx.conf").write_text(main_config(folder, site))
    nginx: subprocess.Popen[bytes] | None = None
    try:
        deployment.serve(receiver_port, "--no-worker", CHAVE=SECRET)
        nginx = start_nginx(binary, folder, port)
        yield Stack(deployment, receiver_port, port, ca)
    finally:
        if nginx is not None:
            nginx.terminate()
            try:
                nginx.wait(timeout=10)
            except subprocess.TimeoutExpired:
                nginx.kill()
                nginx.wait()
        deployment.stop_all()


def delivery(marker: str) -> tuple[dict[str, str], bytes]:
    """A Duimp notification as the Portal sends it, unique by ``marker``."""
    body = {
        "identificacao": {"numero": "26BR00000000198", "versao": 2},
        "situacaoDuimp": "DESEMBARACADA_AGUARDANDO_ENTREGA_CARGA",
        "canal": "VERDE",
        "dataEvento": "2026-11-30T10:15:00-03:00",
        "message": marker,
    }
    headers = {
        "content-type": "application/json",
        "event-type": EVENT,
        "secret": SECRET,
        "destinatario-tipo": "CNPJ",
        "destinatario-id": "00000000000191",
    }
    return headers, json.dumps(body).encode()


def rows_with(stack: Stack, marker: str) -> list[dict[str, Any]]:
    return [row for row in stack.stored() if marker in row["body"]]


def test_the_shipped_site_is_what_runs_apart_from_ports_and_certificates(tmp_path: Path) -> None:
    shipped = SITE.read_text()
    rendered = render_site(shipped, 8443, 18000, tmp_path / "c.pem", tmp_path / "k.pem")
    changed = [
        (before.strip(), after.strip())
        for before, after in zip(shipped.splitlines(), rendered.splitlines(), strict=True)
        if before != after
    ]
    assert sorted(before for before, _ in changed) == sorted(SHIPPED.values())
    assert ("listen 443 ssl;", "listen 127.0.0.1:8443 ssl;") in changed
    assert ("server 127.0.0.1:8000;", "server 127.0.0.1:18000;") in changed


def test_an_allowlisted_client_is_stored_with_its_own_address(stack: Stack) -> None:
    headers, body = delivery("allowlisted-0001")
    with stack.client(ALLOWED) as client:
        answer = client.post("/webhooks/pucomex", headers=headers, content=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["duplicate"] is False
    (row,) = rows_with(stack, "allowlisted-0001")
    assert row["id"] == answer.json()["id"]
    assert row["client_ip"] == ALLOWED
    assert row["event"] == EVENT


def test_a_client_in_no_allowlist_is_refused_and_nothing_is_stored(stack: Stack) -> None:
    headers, body = delivery("refused-0002")
    with stack.client(REFUSED) as client:
        answer = client.post("/webhooks/pucomex", headers=headers, content=body)
    assert answer.status_code == 403
    assert rows_with(stack, "refused-0002") == []


def test_a_forged_x_forwarded_for_does_not_admit_a_refused_client(stack: Stack) -> None:
    headers, body = delivery("forged-0003")
    headers["x-forwarded-for"] = ALLOWED
    with stack.client(REFUSED) as client:
        answer = client.post("/webhooks/pucomex", headers=headers, content=body)
    assert answer.status_code == 403
    assert rows_with(stack, "forged-0003") == []


def test_nginx_replaces_what_a_client_sent_in_x_forwarded_for(stack: Stack) -> None:
    """nginx is the edge: the receiver gets exactly the peer nginx saw, nothing of the client's."""
    headers, body = delivery("replaced-0004")
    headers["x-forwarded-for"] = "198.51.100.7"
    with stack.client(ALLOWED) as client:
        answer = client.post("/webhooks/pucomex", headers=headers, content=body)
    assert answer.status_code == 200, answer.text
    (row,) = rows_with(stack, "replaced-0004")
    assert row["client_ip"] == ALLOWED
    assert row["headers"]["x-forwarded-for"] == ALLOWED


@pytest.mark.parametrize("path", ["/metrics", "/healthz", "/readyz", "/", "/docs"])
def test_only_the_webhook_routes_are_reachable_through_nginx(stack: Stack, path: str) -> None:
    """nginx answers 404 itself: its own page, never the receiver's answer passed through."""
    with stack.client(ALLOWED) as client:
        answer = client.get(path)
    assert answer.status_code == 404
    assert "<center>nginx</center>" in answer.text


def test_metrics_are_on_the_admin_listener_and_never_on_the_webhook_port(stack: Stack) -> None:
    """What nginx hides is served where monitoring asks for it: the admin listener; the receiver's
    own webhook port, asked directly by its trusted proxy's address, answers 404 too."""
    admin = httpx.get(f"{stack.deployment.admin}/metrics", timeout=10)
    assert admin.status_code == 200
    assert "receiver_ingest_seconds_bucket" in admin.text
    assert httpx.get(f"{stack.deployment.admin}/readyz", timeout=10).status_code == 200
    for path in ("/metrics", "/healthz", "/readyz"):
        direct = httpx.get(f"http://127.0.0.1:{stack.receiver_port}{path}", timeout=10)
        assert direct.status_code == 404, path


@contextlib.contextmanager
def tls_socket(
    stack: Stack, version: ssl.TLSVersion | None = None, source: str = ALLOWED
) -> Iterator[ssl.SSLSocket]:
    """A TLS connection to nginx from ``source``, handshake done."""
    ctx = stack.context(version)
    with (
        socket.create_connection(
            ("127.0.0.1", stack.port), timeout=10, source_address=(source, 0)
        ) as plain,
        ctx.wrap_socket(plain, server_hostname="127.0.0.1") as sock,
    ):
        yield sock


def raw_answer(stack: Stack, request: bytes) -> bytes:
    """Send ``request`` as written (no client normalises its path); the answer, to the end."""
    with tls_socket(stack) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(4096):
            received += chunk
    return received


@pytest.mark.parametrize(
    "target", ["/webhooks/../metrics", "/webhooks/%2e%2e/healthz", "/webhooks/..%2freadyz"]
)
def test_dot_segments_cannot_climb_out_of_the_webhook_routes(stack: Stack, target: str) -> None:
    request = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    answer = raw_answer(stack, request.encode())
    assert answer.startswith(b"HTTP/1.1 404 "), answer[:200]
    assert b"<center>nginx</center>" in answer  # nginx's own 404, not one passed through


def test_tls_1_1_is_refused_and_tls_1_2_and_1_3_accepted(stack: Stack) -> None:
    def handshake(version: ssl.TLSVersion) -> str | None:
        with tls_socket(stack, version) as sock:
            return sock.version()

    with pytest.raises(ssl.SSLError):
        handshake(ssl.TLSVersion.TLSv1_1)
    assert handshake(ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    assert handshake(ssl.TLSVersion.TLSv1_3) == "TLSv1.3"


@pytest.mark.parametrize(
    "extra",
    [
        {"x-big": "a" * 9000},  # one line over 8 KiB
        {f"x-h{n}": "b" * 7000 for n in range(5)},  # 35 KiB of head, each line within 8 KiB
    ],
    ids=["a 9 KiB header line", "35 KiB of headers"],
)
def test_a_head_over_nginx_limits_is_refused_by_nginx(stack: Stack, extra: dict[str, str]) -> None:
    headers, body = delivery("big-head-0005")
    with stack.client(ALLOWED) as client:
        answer = client.post("/webhooks/pucomex", headers={**headers, **extra}, content=body)
    assert answer.status_code == 400
    assert "Request Header Or Cookie Too Large" in answer.text  # nginx's, not the receiver's 431
    assert rows_with(stack, "big-head-0005") == []


def test_bodies_pass_up_to_max_body_bytes_and_nginx_refuses_one_byte_more(stack: Stack) -> None:
    """client_max_body_size 1m matches the receiver's max_body_bytes (1 MiB)."""
    headers, body = delivery("big-body-0006")
    at_limit = body + b" " * ((1 << 20) - len(body))
    with stack.client(ALLOWED) as client:
        fits = client.post("/webhooks/pucomex", headers=headers, content=at_limit)
        over = client.post("/webhooks/pucomex", headers=headers, content=at_limit + b" ")
    assert fits.status_code == 200, fits.text
    assert over.status_code == 413
    assert "<center>nginx</center>" in over.text
    assert len(rows_with(stack, "big-body-0006")) == 1


def test_a_sender_slower_than_the_receivers_read_timeout_is_absorbed_by_nginx(
    stack: Stack,
) -> None:
    """The receiver gives a body read_timeout_seconds (0.5 s here); nginx reads the whole body
    first (proxy_request_buffering), so a sender that pauses 1 s mid-body is still stored."""
    headers, body = delivery("slow-0007")
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    request = (
        f"POST /webhooks/pucomex HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with tls_socket(stack) as sock:
        sock.sendall(request + body[:20])
        time.sleep(1.0)  # the sender's pause is the point of the test
        sock.sendall(body[20:])
        received = b""
        while chunk := sock.recv(4096):
            received += chunk
    assert received.startswith(b"HTTP/1.1 200 "), received[:200]
    assert len(rows_with(stack, "slow-0007")) == 1


def test_the_receivers_503_reaches_the_sender_unchanged(stack: Stack) -> None:
    """With its writer stopped the receiver answers 503 with Retry-After at ack_timeout_seconds
    (2 s); nginx's proxy_read_timeout (3 s) lets that answer through, not a 504 of its own."""
    headers, body = delivery("stalled-0008")
    writer = writer_of(stack.deployment.processes[0].pid)
    os.kill(writer, signal.SIGSTOP)
    try:
        with stack.client(ALLOWED) as client:
            answer = client.post("/webhooks/pucomex", headers=headers, content=body)
    finally:
        os.kill(writer, signal.SIGCONT)
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"] == "5"
    assert "nginx" not in answer.text
