"""``receiver portal ...``: manage the Portal subscriptions and recover failed deliveries.

The command group names this module by its import string and loads it when it is used (shared
options come from ``receiver.runtime.cliutil``), so either can be imported first. Tests pass
``obj={"transport": httpx.MockTransport(...)}`` to ``CliRunner.invoke`` to replace the network.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import click
import httpx

from receiver.config import Settings
from receiver.errors import ConfigError
from receiver.portal.client import PortalClient
from receiver.portal.subscriptions import SubscriptionAPI, apply_sync, format_date, plan_sync
from receiver.runtime.cliutil import config_option, friendly_errors, settings_for
from receiver.runtime.recovery import recover
from receiver.safetext import for_terminal
from receiver.store import Store

T = TypeVar("T")


def _client(settings: Settings) -> PortalClient:
    if settings.portal is None:
        raise ConfigError(
            f"{settings.origin}: portal: no such section; the Portal commands need it "
            "(base_url, certificate, role_type)"
        )
    obj = click.get_current_context().find_object(dict) or {}
    transport: httpx.AsyncBaseTransport | None = obj.get("transport")
    return PortalClient(settings.portal, transport=transport)


def _with_api(
    config_path: Path | None, work: Callable[[SubscriptionAPI, Settings], Awaitable[T]]
) -> T:
    settings = settings_for(config_path)
    client = _client(settings)

    async def run() -> T:
        async with client:
            return await work(client.subscriptions, settings)

    return asyncio.run(run())


@click.group()
def portal() -> None:
    """The Portal API: subscriptions and recovery of failed deliveries."""


@portal.group()
def subscriptions() -> None:
    """Subscriptions of this certificate at the Portal (seed: push events API)."""


def _secret_note(settings: Settings) -> None:
    if settings.portal is not None and settings.portal.chave_secreta is None:
        click.echo(
            "note: portal.chave_secreta is not set: the Portal will send no `secret` header, so "
            "only the allowlist protects the endpoint",
            err=True,
        )


@subscriptions.command("list")
@config_option
@click.option(
    "--inactive",
    is_flag=True,
    help="Also the subscriptions the Portal cancelled, with the reason (exibirInativos=true).",
)
@friendly_errors
def subscriptions_list(config_path: Path | None, inactive: bool) -> None:
    """List the active subscriptions (--inactive: the cancelled ones too)."""

    async def work(api: SubscriptionAPI, _: Settings) -> None:
        found = await api.list(inactive=inactive)
        for sub in found:
            state = "" if sub.ativo else f"  INACTIVE: {sub.motivo_inativacao or 'no reason given'}"
            # What the Portal lists is shown escaped, as anything read from elsewhere is.
            click.echo(for_terminal(f"{sub.id:>10}  {sub.evento:<40}  {sub.endpoint}{state}"))
        if not found:
            click.echo("no subscriptions")
        cancelled = sum(1 for sub in found if not sub.ativo)
        if cancelled:
            click.echo(
                f"{cancelled} cancelled by the Portal; `receiver portal subscriptions sync` "
                "creates the configured ones again"
            )

    _with_api(config_path, work)


@subscriptions.command("add")
@config_option
@click.argument("evento")
@click.argument("endpoint")
@friendly_errors
def subscriptions_add(config_path: Path | None, evento: str, endpoint: str) -> None:
    """Subscribe ENDPOINT (https://) to EVENTO."""

    async def work(api: SubscriptionAPI, settings: Settings) -> None:
        _secret_note(settings)
        sub = await api.create(evento, endpoint)
        click.echo(f"created #{sub.id}: {sub.evento} -> {sub.endpoint}")

    _with_api(config_path, work)


@subscriptions.command("update")
@config_option
@click.argument("subscription_id", type=int)
@click.argument("evento")
@click.argument("endpoint")
@friendly_errors
def subscriptions_update(
    config_path: Path | None, subscription_id: int, evento: str, endpoint: str
) -> None:
    """Change subscription SUBSCRIPTION_ID to EVENTO and ENDPOINT."""

    async def work(api: SubscriptionAPI, settings: Settings) -> None:
        _secret_note(settings)
        sub = await api.update(subscription_id, evento, endpoint)
        click.echo(f"updated #{sub.id}: {sub.evento} -> {sub.endpoint}")

    _with_api(config_path, work)


@subscriptions.command("remove")
@config_option
@click.argument("subscription_id", type=int)
@friendly_errors
def subscriptions_remove(config_path: Path | None, subscription_id: int) -> None:
    """Delete subscription SUBSCRIPTION_ID."""

    async def work(api: SubscriptionAPI, _: Settings) -> None:
        await api.delete(subscription_id)
        click.echo(f"deleted #{subscription_id}")

    _with_api(config_path, work)


@subscriptions.command("sync")
@config_option
@click.option("--dry-run", is_flag=True, help="Show the plan; change nothing.")
@click.option(
    "--resend-secret",
    is_flag=True,
    help="Update every kept subscription too, so it carries the current portal.chave_secreta "
    "(after a rotation).",
)
@friendly_errors
def subscriptions_sync(config_path: Path | None, dry_run: bool, resend_secret: bool) -> None:
    """Make the Portal's subscriptions match `subscriptions:` in receiver.yaml; subscriptions the
    Portal cancelled are created again."""

    async def work(api: SubscriptionAPI, settings: Settings) -> None:
        _secret_note(settings)
        current = await api.list(inactive=True)
        plan = plan_sync(current, settings.subscriptions, resend_secret=resend_secret)
        click.echo("plan:")
        for line in plan.lines() or ["  (no subscriptions wanted or present)"]:
            click.echo(for_terminal(line))
        if plan.empty:
            click.echo("already in sync")
        elif dry_run:
            click.echo("dry run: nothing changed")
        else:
            await apply_sync(api, plan)
            click.echo(f"applied: {plan.summary()}")

    _with_api(config_path, work)


@portal.command("recover")
@config_option
@click.option("--date", "day", default=None, help="Day of the failures, ddMMyyyy (default: today).")
@friendly_errors
def recover_command(config_path: Path | None, day: str | None) -> None:
    """Store the notifications the Portal failed to deliver on a day, that we never stored."""
    data = format_date(day)
    settings = settings_for(config_path)
    store = Store.from_settings(settings)
    try:
        store.check_schema()
        client = _client(settings)

        async def run() -> str:
            async with client:
                report = await recover(client.subscriptions, store, data)
            return report.summary()

        click.echo(asyncio.run(run()))
    finally:
        store.close()
