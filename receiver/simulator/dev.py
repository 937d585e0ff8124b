"""``receiver dev``: a handler developer's loop in one command.

It is ``receiver demo``'s wiring (``receiver.simulator.demo``) around your handler modules: the
Portal simulator (subscription API, sender, Portal API under mutual TLS), a TLS receiver with
certificates made for it (trustme) and ``receiver.yaml`` as the README configures it, your
modules imported from the current directory (no ``PYTHONPATH``), subscriptions for the events
they handle, and a few of those events emitted. Then it watches the ``.py`` files of the current
directory: on a change the worker part stops (its running handlers finish), the modules are
imported again and a new worker starts; ingest and the simulator keep running, and a module that
no longer imports is reported in one line until it is fixed. The folder (databases, certificates,
``receiver.yaml``, ``dispatcher.yaml``, handler files under ``data/``) is kept for inspection:
``receiver inbox list --config FOLDER/receiver.yaml``, and ``receiver dispatcher emit ... --config
FOLDER/dispatcher.yaml`` sends more events to it. Ctrl-C or SIGTERM stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import watchfiles
import yaml

from receiver.catalog import PUCOMEX_CATALOG
from receiver.config import PortalSettings, Settings
from receiver.dispatcher import Dispatcher, DispatcherSettings
from receiver.dispatcher.portal_events import PUBLISHED_DUIMP_EVENTS
from receiver.errors import ConfigError, ReceiverError
from receiver.ingest.app import create_app
from receiver.portal.client import PortalClient
from receiver.runtime.services import build_routing, worker_service
from receiver.simulator.app import loopback_settings, run_simulator
from receiver.simulator.certificates import write_demo_certificates
from receiver.simulator.demo import demo_receiver_settings, serve_receiver
from receiver.simulator.duimps import duimp_number
from receiver.store import Store
from receiver.worker.routing import Routing

log = logging.getLogger("receiver.dev")

# More would be a load test: a few events show what the handlers do.
MAX_EVENTS = 8


def events_to_emit(routing: Routing, wanted: Sequence[str]) -> list[str]:
    """``wanted`` (``--event``), else the Portal's catalog events the handlers run on (at most
    ``MAX_EVENTS``), else the published Duimp events."""
    if wanted:
        return list(dict.fromkeys(wanted))
    handled = [event for event in PUCOMEX_CATALOG if routing.handlers_for("pucomex", event)]
    return handled[:MAX_EVENTS] or list(PUBLISHED_DUIMP_EVENTS)


def dados_for(sequence: int) -> dict[str, object]:
    """What an emitted event says: a Duimp of the simulator's (its consultation answers it)."""
    return {"numero": duimp_number(9000 + sequence, year=26), "versao": 1}


def _forget_local_modules(root: Path) -> None:
    """Drop the modules imported from ``root`` (the handlers and what they import there), so the
    next import reads the files again."""
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file and Path(file).resolve().is_relative_to(root):
            del sys.modules[name]


def write_dispatcher_config(folder: Path, settings: DispatcherSettings) -> Path:
    """``dispatcher.yaml``: ``receiver dispatcher emit --config`` reaches the dev loop's
    simulator through it (its database, and the receiver's CA)."""
    path = folder / "dispatcher.yaml"
    section = {
        "database_url": settings.database_url,
        "interval_seconds": settings.interval_seconds,
        "allowed_networks": settings.allowed_networks,
        "outbound_ca_file": str(settings.outbound_ca_file),
    }
    path.write_text(yaml.safe_dump({"dispatcher": section}))
    return path


async def run_dev(
    modules: Sequence[str],
    folder: Path,
    *,
    wanted_events: Sequence[str] = (),
    root: Path | None = None,
    stop: asyncio.Event | None = None,
    say: Callable[[str], None] = print,
    handle_signals: bool = False,
) -> None:
    """``handle_signals``: SIGINT and SIGTERM set ``stop``. They are taken once the servers run:
    uvicorn installs its own handlers when each server starts, which would stop that server
    alone."""
    root = (root or Path.cwd()).resolve()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))  # the handler modules, without PYTHONPATH
    stop = stop or asyncio.Event()
    certs = write_demo_certificates(folder)
    simulator_settings = loopback_settings(folder, certs, interval_seconds=1.0)
    dispatcher_yaml = write_dispatcher_config(folder, simulator_settings)
    async with run_simulator(simulator_settings) as simulator:
        settings = demo_receiver_settings(
            folder, certs, simulator.url, secrets.token_hex(16), handlers=modules, log_level="INFO"
        )
        routing = build_routing(settings)
        store = Store.from_settings(settings)
        # Like receiver demo, its own operator: it runs `receiver db upgrade` on its store.
        await asyncio.to_thread(store.upgrade_schema)
        app = create_app(settings, store=store)  # ingest only: the worker part restarts alone
        try:
            async with (
                serve_receiver(app, certs["server"]) as receiver_url,
                PortalClient(_portal(settings)) as portal,
            ):
                if handle_signals:
                    loop = asyncio.get_running_loop()
                    for signum in (signal.SIGINT, signal.SIGTERM):
                        loop.add_signal_handler(signum, stop.set)
                events = events_to_emit(routing, wanted_events)
                for event in events:
                    await portal.subscriptions.create(event, f"{receiver_url}/webhooks/pucomex")
                example = folder / "dados.json"
                example.write_text(json.dumps(dados_for(0)) + "\n")
                say(f"folder {folder} (kept: receiver.yaml, receiver.db, dispatcher.yaml, data/)")
                say(f"Portal simulator on {simulator.url}; receiver on {receiver_url} (TLS)")
                say(f"handlers {', '.join(modules)}; subscribed to {', '.join(events)}")
                say(
                    "send another: receiver dispatcher emit "
                    f"{events[0]} --json {example} --config {dispatcher_yaml}"
                )
                say(f"look: receiver inbox list --config {folder / 'receiver.yaml'}")
                await _work_and_reload(
                    settings, store, routing, root, stop, say, simulator.dispatcher, events
                )
                await simulator.dispatcher.close()
        finally:
            store.close()


def _portal(settings: Settings) -> PortalSettings:
    assert settings.portal is not None  # demo_receiver_settings always has one
    return settings.portal


async def _work_and_reload(
    settings: Settings,
    store: Store,
    routing: Routing | None,
    root: Path,
    stop: asyncio.Event,
    say: Callable[[str], None],
    dispatcher: Dispatcher,
    events: Sequence[str],
) -> None:
    emitted = False
    while not stop.is_set():
        changed = asyncio.Event()
        async with contextlib.AsyncExitStack() as running:
            if routing is not None:
                await running.enter_async_context(worker_service(settings, store, routing)())
                say(f"worker running {len(routing.routes)} handlers")
                if not emitted:
                    emitted = True
                    for sequence, event in enumerate(events, start=1):
                        await dispatcher.emit(event, dados_for(sequence))
                    say(f"emitted {len(events)} events: {', '.join(events)}")
            watching = asyncio.create_task(_first_change(root, stop, changed))
            await _either(stop, changed)
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
        if stop.is_set():
            break
        _forget_local_modules(root)
        try:
            routing = build_routing(settings)
            say("handler code changed: worker restarted with the new code")
        except (ConfigError, ReceiverError) as error:
            routing = None
            say(f"handler code changed but cannot be loaded, waiting for a fix: {error}")


async def _first_change(root: Path, stop: asyncio.Event, changed: asyncio.Event) -> None:
    async for _ in watchfiles.awatch(
        root, watch_filter=watchfiles.PythonFilter(), stop_event=stop, debounce=200
    ):
        changed.set()
        return


async def _either(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def main(
    modules: Sequence[str], folder: Path, wanted_events: Sequence[str], say: Callable[[str], None]
) -> None:
    """Run until SIGINT or SIGTERM."""

    async def run() -> None:
        await run_dev(modules, folder, wanted_events=wanted_events, say=say, handle_signals=True)
        say(f"stopped; the folder is kept: {folder}")

    folder.mkdir(parents=True, exist_ok=True)
    asyncio.run(run())
