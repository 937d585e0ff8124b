"""Where alerts go: the log (always), a webhook (JSON through the guarded outbound client, signed
with the Standard Webhooks scheme when a secret is set) and e-mail over SMTP (STARTTLS unless
told otherwise). A sink raises when it could not deliver; the evaluator logs that and tries again
at its next evaluation."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import smtplib
import ssl
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import make_msgid
from typing import TYPE_CHECKING, Any

from receiver.alert_settings import AlertSettings, EmailSinkSettings, WebhookSinkSettings
from receiver.alerts.model import Episode, Sink

# Imported by the sinks that use them, when alerts: configures a webhook or STARTTLS: the alerts
# run in every `receiver serve` (enabled by default, to the log), and httpx with its CLI's rich
# and pygments, standardwebhooks and the guarded client cost each serving process 12 MiB.
if TYPE_CHECKING:
    import httpx

log = logging.getLogger("receiver.alerts")

FIRED = "fired"
RESOLVED = "resolved"


def payload(episode: Episode, event: str) -> dict[str, Any]:
    """What the webhook sends (and what the e-mail says)."""
    return {
        "type": f"alert.{event}",
        "episode": episode.id,
        "rule": episode.rule,
        "subject": episode.subject,
        "summary": episode.summary,
        "fired_at": episode.fired_at.isoformat(),
        "resolved_at": episode.resolved_at.isoformat() if episode.resolved_at else None,
    }


def _message_id(episode: Episode, event: str) -> str:
    """The same id for every try of one message, so a receiver can drop a repeat."""
    if episode.id is not None:
        return f"alert_{episode.id}_{event}"
    seed = f"{episode.rule}|{episode.subject}|{episode.fired_at.isoformat()}".encode()
    return f"alert_{hashlib.sha256(seed).hexdigest()[:20]}_{event}"


class LogSink:
    """A WARNING when an alert fires, an INFO line when it resolves."""

    name = "log"

    async def send(self, episode: Episode, event: str) -> None:
        if event == FIRED:
            log.warning("alert fired: %s", episode.describe())
        else:
            log.info("alert resolved: %s", episode.describe())


class WebhookSink:
    """POST ``payload`` as JSON; any answer but 2xx is a failure."""

    name = "webhook"

    def __init__(self, settings: WebhookSinkSettings, client: httpx.AsyncClient | None = None):
        import httpx
        from standardwebhooks import Webhook

        from receiver.outbound import guarded_client

        self._settings = settings
        secret = settings.secret
        self._signer = Webhook(secret.get_secret_value()) if secret is not None else None
        self._client = client or guarded_client(
            settings.allowed_networks,
            allow_http=settings.allow_http,
            extra_ca_file=str(settings.ca_file) if settings.ca_file is not None else None,
            timeout=httpx.Timeout(settings.timeout_seconds),
            max_redirects=0,  # an alert goes where it was configured to go, nowhere else
        )

    async def send(self, episode: Episode, event: str) -> None:
        body = json.dumps(payload(episode, event), ensure_ascii=False)
        headers = {"content-type": "application/json"}
        if self._signer is not None:
            message_id = _message_id(episode, event)
            now = datetime.now(UTC)
            headers["webhook-id"] = message_id
            headers["webhook-timestamp"] = str(int(now.timestamp()))
            headers["webhook-signature"] = self._signer.sign(message_id, now, body)
        answer = await self._client.post(
            self._settings.url, content=body.encode("utf-8"), headers=headers
        )
        if not answer.is_success:
            raise RuntimeError(f"webhook answered {answer.status_code}")

    async def aclose(self) -> None:
        await self._client.aclose()


class EmailSink:
    """One message per firing and per resolution, over SMTP (in a thread: smtplib blocks)."""

    name = "email"

    def __init__(self, settings: EmailSinkSettings) -> None:
        self._settings = settings

    def message(self, episode: Episode, event: str) -> EmailMessage:
        settings = self._settings
        message = EmailMessage()
        word = "FIRING" if event == FIRED else "resolved"
        about = f" [{episode.subject}]" if episode.subject else ""
        # A subject line is one line: the summary's own newlines (none today) would end it.
        message["Subject"] = " ".join(f"[receiver] {word}: {episode.rule}{about}".split())
        message["From"] = settings.sender
        message["To"] = ", ".join(settings.to)
        message["Message-ID"] = make_msgid(domain=settings.sender.split("@", 1)[1])
        lines = [episode.describe(), "", json.dumps(payload(episode, event), indent=2)]
        message.set_content("\n".join(lines) + "\n")
        return message

    async def send(self, episode: Episode, event: str) -> None:
        await asyncio.to_thread(self._send, self.message(episode, event))

    def _send(self, message: EmailMessage) -> None:
        settings = self._settings
        with smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout_seconds) as smtp:
            if settings.starttls:
                from receiver.outbound import outbound_ssl_context

                context: ssl.SSLContext = outbound_ssl_context(
                    extra_ca_file=str(settings.ca_file) if settings.ca_file is not None else None
                )
                smtp.starttls(context=context)
            if settings.username is not None and settings.password is not None:
                smtp.login(settings.username, settings.password.get_secret_value())
            smtp.send_message(message)


def sinks_from_settings(settings: AlertSettings) -> list[Sink]:
    """The log, and the webhook and e-mail sinks ``alerts:`` configures."""
    sinks: list[Sink] = [LogSink()]
    if settings.webhook is not None:
        sinks.append(WebhookSink(settings.webhook))
    if settings.email is not None:
        sinks.append(EmailSink(settings.email))
    return sinks


async def close_sinks(sinks: list[Sink]) -> None:
    for sink in sinks:
        if isinstance(sink, WebhookSink):
            await sink.aclose()
