"""The console in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright),
against a real ``receiver serve`` whose admin listener serves it and whose in-process worker runs
the handlers: log in, filter and search the inbox, open a notification, replay a dead letter and
see it done, a viewer who cannot replay, a POST without its CSRF token, a body with a script in
it shown as text. Screenshots of the main pages go to $CONSOLE_SCREENSHOTS (docs/screenshots/
for the README) or the test's folder."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright import sync_api as playwright_api

from tests.acceptance.conftest import TOKEN, Deployment, free_port
from tests.console_support import OPERATOR_PASSWORD, VIEWER_PASSWORD, console_section

CHROMIUM = Path("/usr/bin/chromium")
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
SCRIPT_BODY = {
    "evento": "duimp.registro",
    "dados": {"numero": "26BR0000099999", "versao": "1"},
    "obs": "<script>alert('xss')</script><img src=x onerror=alert(2)>",
}

# Debian's chromium: .ci/run installs it when missing, as it does nginx (without it these fail).
pytestmark = pytest.mark.acceptance


class Site:
    def __init__(self, deployment: Deployment, port: int, flag: Path, shots: Path) -> None:
        self.deployment = deployment
        self.public = f"http://127.0.0.1:{port}"
        self.console = f"{deployment.admin}/console"
        self.flag = flag
        self.shots = shots
        self.ids: dict[str, str] = {}

    def send(self, name: str, body: dict[str, Any]) -> str:
        answer = httpx.post(
            f"{self.public}/webhooks/pucomex", content=json.dumps(body).encode(), headers=HEADERS
        )
        assert answer.status_code == 200, answer.text
        self.ids[name] = answer.json()["id"]
        return self.ids[name]


def wait_for(condition: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp("console")
    flag = folder / "cancellation-down"
    flag.write_text("down")
    deployment = Deployment(
        folder,
        f"sqlite:///{folder / 'receiver.db'}",
        handlers=["tests.fixtures.console_handlers"],
        console=console_section(),
        # serve's alert evaluator, often: the dead letter below fires an alert the console shows.
        alerts={"every_seconds": 0.5},
    )
    shots = Path(os.environ.get("CONSOLE_SCREENSHOTS") or folder / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    port = free_port()
    deployment.serve(port, CONSOLE_FAIL_FLAG=str(flag))
    site = Site(deployment, port, flag, shots)
    for n in range(12):
        site.send(
            f"registro-{n}",
            {
                "evento": "duimp.registro",
                "dados": {"numero": f"26BR{n:010d}", "versao": "1"},
                "importador": "12.345.678/0001-90",
            },
        )
    site.send("script", SCRIPT_BODY)
    site.send(
        "cancel",
        {
            "evento": "duimp.cancelamento",
            "dados": {"numero": "26BR0000000777", "versao": "1"},
            "motivo": "erro de digitação",
        },
    )
    site.send(
        "orphan",
        {"evento": "duimp.retificacao", "dados": {"numero": "26BR0000000555", "versao": "1"}},
    )
    wait_for(
        lambda: (
            "dead" in httpx.get(f"{deployment.admin}/metrics").text and _dead_count(deployment) >= 1
        )
    )
    try:
        yield site
    finally:
        deployment.stop_all(graceful=True)


def _dead_count(deployment: Deployment) -> int:
    for line in deployment.metrics().splitlines():
        if line.startswith("receiver_dead_letters_total{"):
            return int(float(line.rsplit(" ", 1)[1]))
    return 0


@pytest.fixture(scope="module")
def browser() -> Iterator[playwright_api.Browser]:
    with playwright_api.sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def new_page(browser: playwright_api.Browser) -> Iterator[Callable[[], playwright_api.Page]]:
    contexts: list[playwright_api.BrowserContext] = []

    def make() -> playwright_api.Page:
        context = browser.new_context(viewport={"width": 1280, "height": 860})
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


# Posts from inside the page, with the browser's cookies (Playwright's own request client does not
# send a Secure cookie over http, even to 127.0.0.1, where Chromium does).
POST_FROM_PAGE = """async ([url, fields]) => {
    const answer = await fetch(url, {method: "POST", body: new URLSearchParams(fields)});
    return [answer.status, await answer.text()];
}"""


def post_from_page(page: playwright_api.Page, url: str, fields: dict[str, str]) -> tuple[int, str]:
    status, text = page.evaluate(POST_FROM_PAGE, [url, fields])
    return int(status), str(text)


def log_in(page: playwright_api.Page, site: Site, name: str, password: str) -> None:
    page.goto(f"{site.console}/")
    assert page.url.endswith("/console/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{site.console}/")


def test_the_console_is_on_the_admin_listener_never_on_the_webhook_port(site: Site) -> None:
    assert httpx.get(f"{site.console}/login").status_code == 200
    for path in ("/console/login", "/console/", "/console/static/console.css"):
        answer = httpx.get(f"{site.public}{path}")
        assert answer.status_code == 404, path


def test_an_operator_filters_searches_and_opens_a_notification(
    site: Site, new_page: Callable[[], playwright_api.Page]
) -> None:
    page = new_page()
    errors: list[str] = []
    page.on(
        "console", lambda message: errors.append(message.text) if message.type == "error" else None
    )
    log_in(page, site, "olivia", OPERATOR_PASSWORD)
    page.screenshot(path=str(site.shots / "overview.png"), full_page=True)
    page.click("nav >> text=Inbox")
    rows = page.locator("#inbox tbody tr")
    assert rows.count() == 15
    page.select_option("select[name=status]", "dead")
    page.click("form.filters button[type=submit]")
    assert page.locator("#inbox tbody tr").count() == 1
    assert site.ids["cancel"] in page.inner_text("#inbox")
    page.fill("input[name=q]", "26BR0000000007")
    page.select_option("select[name=status]", "")
    page.click("form.filters button[type=submit]")
    assert page.locator("#inbox tbody tr").count() == 1
    page.goto(f"{site.console}/inbox")
    page.screenshot(path=str(site.shots / "inbox.png"), full_page=True)
    page.click(f"text={site.ids['registro-7']}")
    page.wait_for_url(f"**/notes/{site.ids['registro-7']}")
    assert "26BR0000000007" in page.inner_text("#pretty-body")
    assert "done" in page.inner_text("dl.facts")
    assert "registro" in page.inner_text("main")  # the handler's ctx.save record
    page.screenshot(path=str(site.shots / "notification.png"), full_page=True)
    assert errors == []  # nothing refused by the Content-Security-Policy


def test_a_body_with_a_script_is_shown_as_text_and_never_runs(
    site: Site, new_page: Callable[[], playwright_api.Page]
) -> None:
    page = new_page()
    dialogs: list[str] = []

    def on_dialog(dialog: playwright_api.Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    log_in(page, site, "victor", VIEWER_PASSWORD)
    page.goto(f"{site.console}/notes/{site.ids['script']}")
    assert "<script>alert('xss')</script>" in (page.text_content("#raw-body") or "")
    assert "<script>alert('xss')</script>" in page.inner_text("#pretty-body")
    assert page.locator("main script").count() == 0
    assert page.locator("main img").count() == 0
    page.wait_for_timeout(300)
    assert dialogs == []


def test_an_operator_replays_a_dead_letter_and_sees_it_done(
    site: Site, new_page: Callable[[], playwright_api.Page]
) -> None:
    page = new_page()
    log_in(page, site, "olivia", OPERATOR_PASSWORD)
    page.click("nav >> text=Dead letters")
    assert "cancellation service is down" in page.inner_text("#dead-groups")
    page.screenshot(path=str(site.shots / "dead-letters.png"), full_page=True)
    site.flag.unlink()  # the service is back
    page.click("#dead-groups >> text=Replay group…")
    assert "Replay 1 dead handler job?" in page.inner_text("h1")
    page.click("button.danger")
    assert "Replaying dead letters" in page.inner_text("main")

    def shows_done() -> bool:
        page.goto(f"{site.console}/notes/{site.ids['cancel']}")
        return "done" in page.inner_text("dl.facts")

    wait_for(shows_done)
    # Its attempts: three that raised (with the handler's traceback), then the replay's.
    attempts = page.locator("tr.attempt")
    assert attempts.count() == 4
    assert "RuntimeError" in attempts.nth(0).inner_text()
    assert "console_handlers.py" in (attempts.nth(0).locator("pre").text_content() or "")
    assert "done" in attempts.nth(3).inner_text()
    page.screenshot(path=str(site.shots / "notification-attempts.png"), full_page=True)
    page.goto(f"{site.console}/audit")
    assert "replay dead letters" in page.inner_text("#audit")
    page.screenshot(path=str(site.shots / "audit.png"), full_page=True)


def test_a_viewer_sees_no_replay_button_and_is_refused(
    site: Site, new_page: Callable[[], playwright_api.Page]
) -> None:
    page = new_page()
    log_in(page, site, "victor", VIEWER_PASSWORD)
    page.goto(f"{site.console}/notes/{site.ids['registro-1']}")
    assert page.locator("#replay-note").count() == 0
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    assert csrf
    status, text = post_from_page(
        page, f"{site.console}/notes/{site.ids['registro-1']}/replay", {"csrf": csrf}
    )
    assert status == 403
    assert "Only operators may replay" in text


def test_a_post_without_the_csrf_token_is_refused(
    site: Site, new_page: Callable[[], playwright_api.Page]
) -> None:
    page = new_page()
    log_in(page, site, "olivia", OPERATOR_PASSWORD)
    target = f"{site.console}/notes/{site.ids['registro-2']}/replay"
    missing_status, missing_text = post_from_page(page, target, {})
    assert missing_status == 403 and "CSRF token is missing or wrong" in missing_text
    wrong_status, _ = post_from_page(page, target, {"csrf": "forged"})
    assert wrong_status == 403
    page.goto(f"{site.console}/notes/{site.ids['registro-2']}")
    assert "done" in page.inner_text("dl.facts")  # nothing was replayed


def test_quarantine_groups_what_no_handler_takes(
    site: Site, new_page: Callable[[], playwright_api.Page]
) -> None:
    page = new_page()
    log_in(page, site, "olivia", OPERATOR_PASSWORD)
    page.click("nav >> text=Quarantine")
    groups = page.inner_text("#quarantine-groups")
    assert "duimp.retificacao" in groups
    page.screenshot(path=str(site.shots / "quarantine.png"), full_page=True)
    page.click("#quarantine-groups >> text=Open")
    assert site.ids["orphan"] in page.inner_text("main")


def test_a_firing_alert_is_on_the_overview_and_the_alerts_page(
    site: Site, new_page: Callable[[], playwright_api.Page]
) -> None:
    page = new_page()
    log_in(page, site, "victor", VIEWER_PASSWORD)

    def firing() -> bool:
        page.goto(f"{site.console}/alerts")
        return "dead_letters" in page.inner_text("#firing") or "dead_letters" in page.inner_text(
            "#resolved"
        )

    wait_for(firing)
    page.screenshot(path=str(site.shots / "alerts.png"), full_page=True)
    assert "Alerts" in page.inner_text("h1")
