"""The alert sinks against real servers: the webhook over HTTPS (trustme certificates) through the
guarded outbound client, signed with the Standard Webhooks scheme; e-mail to a real aiosmtpd SMTP
server, with STARTTLS and a login, and without. A sink that fails raises, and the evaluator sends
again at its next evaluation."""

from __future__ import annotations

import asyncio
import json
import smtplib
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from standardwebhooks import Webhook

from receiver.alert_settings import EmailSinkSettings, WebhookSinkSettings
from receiver.alerts import EmailSink, Episode, Evaluator, WebhookSink
from receiver.errors import AddressRefused
from receiver.store import Store
from tests.alerts_support import Clock, ScriptedRule, run_async
from tests.conftest import migrated
from tests.dispatcher_support import TLS, Recorder, https_endpoint

SECRET = "whsec_" + "c2lnbmluZy1zZWNyZXQtYWxlcnRzLTAx"
SMTP_USER, SMTP_PASSWORD = "alertas", "senha-smtp-5b7c9d1e"


def episode(**fields: Any) -> Episode:
    now = datetime(2026, 11, 30, 13, 0, tzinfo=UTC)
    values: dict[str, Any] = {
        "rule": "dead_letters",
        "subject": "",
        "summary": "2 new dead letter(s) in the last 60 min <b>",
        "fired_at": now,
        "seen_at": now,
        "id": 7,
    }
    values.update(fields)
    return Episode(**values)


@pytest.fixture(scope="module")
def tls() -> TLS:
    return TLS()


@pytest.fixture(scope="module")
def ca_file(tls: TLS, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    tls.ca.cert_pem.write_to_path(str(path))
    return path


def webhook_settings(url: str, ca_file: Path | None, **extra: Any) -> WebhookSinkSettings:
    values: dict[str, Any] = {
        "url": url,
        "secret": SECRET,
        "allowed_networks": ["127.0.0.0/8"],
        "ca_file": str(ca_file) if ca_file else None,
        "timeout_seconds": 5,
    }
    values.update(extra)
    return WebhookSinkSettings.model_validate(values)


@run_async
async def test_the_webhook_posts_signed_json_over_https(tls: TLS, ca_file: Path) -> None:
    recorder = Recorder()
    async with https_endpoint(tls, recorder) as server:
        sink = WebhookSink(webhook_settings(f"{server.url}/alertas", ca_file))
        try:
            await sink.send(episode(), "fired")
            await sink.send(episode(resolved_at=datetime(2026, 11, 30, 14, tzinfo=UTC)), "resolved")
        finally:
            await sink.aclose()
    fired, resolved = recorder.requests
    assert fired.path == "/alertas" and fired.headers["content-type"] == "application/json"
    body = json.loads(fired.body)
    assert body == {
        "type": "alert.fired",
        "episode": 7,
        "rule": "dead_letters",
        "subject": "",
        "summary": "2 new dead letter(s) in the last 60 min <b>",
        "fired_at": "2026-11-30T13:00:00+00:00",
        "resolved_at": None,
    }
    # A receiver checks it with the Standard Webhooks library and the shared secret.
    verified = Webhook(SECRET).verify(fired.body, fired.headers)
    assert verified["rule"] == "dead_letters"
    assert fired.headers["webhook-id"] == "alert_7_fired"
    assert json.loads(resolved.body)["type"] == "alert.resolved"
    assert resolved.headers["webhook-id"] == "alert_7_resolved"
    with pytest.raises(Exception, match="signature"):
        Webhook("whsec_" + "b3RoZXItc2VjcmV0LW5vdC1vdXJz").verify(fired.body, fired.headers)


@run_async
async def test_an_answer_other_than_2xx_or_a_redirect_is_a_failure(tls: TLS, ca_file: Path) -> None:
    recorder = Recorder(script=[503, (302, {"location": "https://127.0.0.1:1/x"}, b"")])
    async with https_endpoint(tls, recorder) as server:
        sink = WebhookSink(webhook_settings(f"{server.url}/a", ca_file))
        try:
            for answer in (503, 302):
                with pytest.raises(RuntimeError, match=f"webhook answered {answer}"):
                    await sink.send(episode(), "fired")
        finally:
            await sink.aclose()
    assert len(recorder.requests) == 2  # the redirect was not followed


@run_async
async def test_the_guard_refuses_an_internal_address_not_allowed(tls: TLS, ca_file: Path) -> None:
    recorder = Recorder()
    async with https_endpoint(tls, recorder) as server:
        sink = WebhookSink(webhook_settings(server.url, ca_file, allowed_networks=[]))
        try:
            with pytest.raises(AddressRefused, match="loopback"):
                await sink.send(episode(), "fired")
        finally:
            await sink.aclose()
        plain = WebhookSink(
            webhook_settings(server.url.replace("https:", "http:"), None, allow_http=False)
        )
        try:
            with pytest.raises(AddressRefused, match="http://"):
                await plain.send(episode(), "fired")
        finally:
            await plain.aclose()
    assert recorder.requests == []


@run_async
async def test_a_certificate_from_an_unknown_ca_is_refused(tls: TLS) -> None:
    recorder = Recorder()
    async with https_endpoint(tls, recorder) as server:
        sink = WebhookSink(webhook_settings(server.url, None))
        try:
            with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
                await sink.send(episode(), "fired")
        finally:
            await sink.aclose()
    assert recorder.requests == []


@run_async
async def test_the_evaluator_sends_again_after_the_webhook_failed(
    tls: TLS, ca_file: Path, tmp_path: Path
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'receiver.db'}")
    migrated(store)
    recorder = Recorder(script=[500])
    rule = ScriptedRule("dead_letters")
    rule.subjects = [""]
    try:
        async with https_endpoint(tls, recorder) as server:
            sink = WebhookSink(webhook_settings(server.url, ca_file))
            evaluator = Evaluator(store, [rule], [sink], clock=Clock())
            first = await evaluator.evaluate()
            assert first.sink_failures == ["webhook: RuntimeError: webhook answered 500"]
            await evaluator.evaluate()
            await evaluator.evaluate()
            await sink.aclose()
    finally:
        store.close()
    ids = [request.headers["webhook-id"] for request in recorder.requests]
    assert ids == ["alert_1_fired", "alert_1_fired"]  # the failed try, then one delivery


# --- e-mail ---------------------------------------------------------------------------------


@dataclass
class Mailbox:
    """What the SMTP server accepted, and the logins it saw."""

    messages: list[tuple[Envelope, Message]] = field(default_factory=list)
    logins: list[tuple[bytes, bool]] = field(default_factory=list)

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        content = envelope.content
        assert isinstance(content, bytes)
        self.messages.append((envelope, message_from_bytes(content)))
        return "250 OK"

    def authenticate(
        self, server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        ok = data.login == SMTP_USER.encode() and data.password == SMTP_PASSWORD.encode()
        self.logins.append((data.login, ok))
        return AuthResult(success=ok)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class SMTPServerRunning:
    mailbox: Mailbox
    port: int


def smtp_server(tls: TLS | None) -> Iterator[SMTPServerRunning]:
    mailbox = Mailbox()
    port = free_port()
    options: dict[str, Any] = {}
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.ca.issue_cert("127.0.0.1").configure_cert(context)
        options = {
            "tls_context": context,
            "require_starttls": True,
            "authenticator": mailbox.authenticate,
            "auth_require_tls": True,
        }
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield SMTPServerRunning(mailbox, port)
    finally:
        controller.stop()


@pytest.fixture
def smtp_tls(tls: TLS) -> Iterator[SMTPServerRunning]:
    yield from smtp_server(tls)


@pytest.fixture
def smtp_plain() -> Iterator[SMTPServerRunning]:
    yield from smtp_server(None)


def email_settings(port: int, **extra: Any) -> EmailSinkSettings:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "sender": "receiver@sefaz.example.gov.br",
        "to": ["operacao@sefaz.example.gov.br", "plantao@sefaz.example.gov.br"],
        "timeout_seconds": 10,
    }
    values.update(extra)
    return EmailSinkSettings.model_validate(values)


def test_email_over_starttls_with_a_login(smtp_tls: SMTPServerRunning, ca_file: Path) -> None:
    settings = email_settings(
        smtp_tls.port, username=SMTP_USER, password=SMTP_PASSWORD, ca_file=str(ca_file)
    )
    asyncio.run(EmailSink(settings).send(episode(subject="dimp-registro-import"), "fired"))
    [(envelope, message)] = smtp_tls.mailbox.messages
    assert envelope.mail_from == "receiver@sefaz.example.gov.br"
    assert envelope.rcpt_tos == ["operacao@sefaz.example.gov.br", "plantao@sefaz.example.gov.br"]
    assert message["Subject"] == "[receiver] FIRING: dead_letters [dimp-registro-import]"
    text = message.get_payload(decode=True)
    assert isinstance(text, bytes)
    assert b"FIRING dead_letters [dimp-registro-import]: 2 new dead letter(s)" in text
    assert smtp_tls.mailbox.logins == [(SMTP_USER.encode(), True)]


def test_a_wrong_password_or_an_untrusted_certificate_is_a_failure(
    smtp_tls: SMTPServerRunning, ca_file: Path
) -> None:
    wrong = email_settings(
        smtp_tls.port,
        username=SMTP_USER,
        password="errada-000000",
        ca_file=str(ca_file),
        timeout_seconds=2,
    )
    # aiosmtpd answers a refused login slowly (against guessing): either way, a failure.
    with pytest.raises((smtplib.SMTPException, OSError)):
        asyncio.run(EmailSink(wrong).send(episode(), "fired"))
    assert smtp_tls.mailbox.logins == [(SMTP_USER.encode(), False)]
    untrusted = email_settings(smtp_tls.port, username=SMTP_USER, password=SMTP_PASSWORD)
    with pytest.raises(ssl.SSLCertVerificationError):
        asyncio.run(EmailSink(untrusted).send(episode(), "fired"))
    # A server that demands STARTTLS refuses a client that does not start it.
    plain = email_settings(smtp_tls.port, starttls=False)
    with pytest.raises(Exception, match="STARTTLS"):
        asyncio.run(EmailSink(plain).send(episode(), "fired"))
    assert smtp_tls.mailbox.messages == []


def test_email_without_starttls_to_a_local_relay(smtp_plain: SMTPServerRunning) -> None:
    sink = EmailSink(email_settings(smtp_plain.port, starttls=False))
    resolved = episode(resolved_at=datetime(2026, 11, 30, 14, 5, tzinfo=UTC))
    asyncio.run(sink.send(resolved, "resolved"))
    [(_, message)] = smtp_plain.mailbox.messages
    assert message["Subject"] == "[receiver] resolved: dead_letters"


def test_the_evaluator_mails_once_per_episode_and_again_after_a_refusal(
    smtp_plain: SMTPServerRunning, tmp_path: Path
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'receiver.db'}")
    migrated(store)
    rule = ScriptedRule("quarantined")
    rule.subjects = [""]
    closed = EmailSink(email_settings(free_port(), starttls=False, timeout_seconds=2))
    try:
        failed = asyncio.run(Evaluator(store, [rule], [closed], clock=Clock()).evaluate())
        assert failed.sink_failures and "ConnectionRefusedError" in failed.sink_failures[0]
        sink = EmailSink(email_settings(smtp_plain.port, starttls=False))
        evaluator = Evaluator(store, [rule], [sink], clock=Clock())
        for _ in range(3):
            asyncio.run(evaluator.evaluate())
        rule.subjects = []
        for _ in range(2):
            asyncio.run(evaluator.evaluate())
    finally:
        store.close()
    subjects = [message["Subject"] for _, message in smtp_plain.mailbox.messages]
    assert subjects == ["[receiver] FIRING: quarantined", "[receiver] resolved: quarantined"]
