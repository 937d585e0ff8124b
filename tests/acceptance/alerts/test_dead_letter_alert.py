"""A real ``receiver serve`` with alerts on: a handler that always fails makes a dead letter, and
the alert reaches a real SMTP server (aiosmtpd, started here) once, then its resolution once;
``receiver alerts check`` and /metrics say the same meanwhile. With ``--workers 2``, one serving
process evaluates."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from email import message_from_bytes
from email.message import Message
from pathlib import Path

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import update

from receiver.alerts import episodes
from receiver.sources import dedup_key
from receiver.store import NOTES, Incoming, NoteStatus, Store
from tests.acceptance.conftest import TOKEN, Deployment, duimp_body, free_port

pytestmark = pytest.mark.acceptance


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"

    def subjects(self) -> list[str]:
        return [str(message["Subject"]) for message in self.messages]


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    mailbox, port = Mailbox(), free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()


def wait_until(check: Callable[[], bool], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


WINDOW_MINUTES = 0.2  # a dead letter is "new" for 12 s: the alert resolves on its own after


def test_a_dead_letter_is_mailed_once_then_its_resolution(
    tmp_path: Path, smtp: tuple[Mailbox, int]
) -> None:
    mailbox, smtp_port = smtp
    deployment = Deployment(
        tmp_path,
        f"sqlite:///{tmp_path / 'receiver.db'}",
        alerts={
            "every_seconds": 0.25,
            "silence": None,
            "dead_letters_minutes": WINDOW_MINUTES,
            "email": {
                "host": "127.0.0.1",
                "port": smtp_port,
                "starttls": False,
                "sender": "receiver@sefaz.example.gov.br",
                "to": ["operacao@sefaz.example.gov.br"],
            },
        },
    )
    try:
        port = free_port()
        deployment.serve(port)
        answer = httpx.post(
            f"http://127.0.0.1:{port}/webhooks/pucomex",
            content=duimp_body(1, "duimp.cancelamento"),
            headers={"authorization": f"Bearer {TOKEN}", "event-type": "duimp.cancelamento"},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        wait_until(lambda: len(mailbox.messages) >= 1)
        # Many evaluations later, still one message while the episode lasts.
        time.sleep(1.5)
        assert mailbox.subjects() == ["[receiver] FIRING: dead_letters"]
        body = mailbox.messages[0].get_payload()
        assert isinstance(body, str) and "1 new dead letter(s)" in body
        assert 'receiver_alerts_firing{rule="dead_letters"} 1.0' in deployment.metrics()
        check = deployment.cli("alerts", "check")
        assert check.returncode == 1, check.stderr
        assert "FIRING dead_letters" in check.stdout
        assert mailbox.subjects() == ["[receiver] FIRING: dead_letters"]  # the check sent none
        wait_until(lambda: len(mailbox.messages) >= 2, seconds=WINDOW_MINUTES * 60 + 10)
        time.sleep(1.0)
        assert mailbox.subjects() == [
            "[receiver] FIRING: dead_letters",
            "[receiver] resolved: dead_letters",
        ]
        quiet = deployment.cli("alerts", "check")
        assert quiet.returncode == 0 and "no alert firing" in quiet.stdout
        listed = deployment.cli("alerts", "list")
        assert listed.returncode == 0 and listed.stdout.startswith("resolved dead_letters")
        assert 'receiver_alerts_firing{rule="dead_letters"} 0.0' in deployment.metrics()
    finally:
        deployment.stop_all()


def test_serve_with_two_processes_evaluates_in_one(tmp_path: Path) -> None:
    deployment = Deployment(
        tmp_path,
        f"sqlite:///{tmp_path / 'receiver.db'}",
        alerts={"every_seconds": 0.2, "silence": None},
    )
    try:
        deployment.serve(free_port(), "--no-worker", "--workers", "2")
        store = Store(f"sqlite:///{tmp_path / 'receiver.db'}")
        try:
            body = b"quarantined by hand"
            [receipt] = store.append_now(
                [Incoming("pucomex", None, "127.0.0.1", {}, body, dedup_key("pucomex", body))]
            )
            with store.engine.begin() as conn:
                conn.execute(
                    update(NOTES)
                    .where(NOTES.c.id == receipt.id)
                    .values(status=NoteStatus.QUARANTINED, routed=True)
                )
            wait_until(lambda: "alert fired: FIRING quarantined" in deployment.output())
            time.sleep(1.5)  # several evaluations of whichever process evaluates
            [episode] = episodes(store)
            assert episode.rule == "quarantined" and episode.firing
        finally:
            store.close()
        output = deployment.output()
        assert output.count("alerts: evaluating") == 1, output
        assert output.count("alert fired: FIRING quarantined") == 1
    finally:
        deployment.stop_all(graceful=True)  # a killed supervisor would leave its workers running
