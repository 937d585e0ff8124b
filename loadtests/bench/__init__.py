"""Ingest throughput side by side: bare Starlette, the receiver on SQLite, the receiver on PostgreSQL.

One run starts each target in turn on this machine, drives it with the same load and prints
requests/s, p50/p99 latency, errors, the receiver's ratio to the bare endpoint, its peak resident
memory, and whether every 200 it answered is in the store. It also prints the CPU each role spent
per request (serving, writers, PostgreSQL, the load generator), and from it the run's CPU ceiling:
the rate those costs would allow had no process ever waited for another. A ratio short of a
target while the ratio of the ceilings is above it is lost to waiting; a ceiling below the target
means the target needs less CPU per request, or more cores.

    .venv/bin/python -m loadtests.bench                      # bare + SQLite, 10 s each
    .venv/bin/python -m loadtests.bench --duration 20 \\
        --postgres postgresql://postgres@127.0.0.1:5432/test  # + PostgreSQL (2 processes)
    .venv/bin/python -m loadtests.bench --rounds 3 ...         # alternate 3 times; medians

The load generator is ``wrk`` (C, epoll), not locust: one locust process cannot saturate a uvicorn
worker on a 2-core machine, so its figures would measure locust. A Lua script gives every request
a unique ~1 KiB PUCOMEX body (no request is a duplicate receipt) and records the id of every 200,
so the store check is by id, not only by count. Install it with ``apt-get install -y wrk``.

Targets:

(a) ``bare``: a Starlette route that reads the body and answers a JSON 200, on uvicorn with the
    same server options as ``receiver serve``, made by the same function
    (``receiver.ingest.http.uvicorn_config``: uvloop, the ``server:`` section's defaults), with
    uvicorn's own httptools protocol instead of the receiver's; one process, two for the
    comparison with PostgreSQL. Nothing is checked or stored: the ceiling.
(b) ``sqlite``: ``receiver serve --no-worker`` on a SQLite file in a temporary directory (WAL,
    synchronous=FULL), with the address allowlist (127.0.0.1) and the Bearer check on; with
    ``--portal-headers``, the ``secret`` header check instead, and every request naming its event
    in ``event-type``, as the Portal sends them.
(c) ``postgres``: the same on a fresh database created on the given server (dropped afterwards),
    with ``--workers 2``.
(b') ``worker`` (with ``--worker``): plain ``receiver serve`` on SQLite, its handler worker in the
    serving process as a user who starts only that command has it: the worker routes (here,
    quarantines: no handlers) what ingest stores, in write transactions of its own, while ingest
    commits. Its CPU counts as the serving process's.
(d) ``peer`` (unless ``--no-peer``): a receiver written the usual way with the same packages
    (``loadtests.bench.peer``: Starlette, a SQLModel table, one session and one commit per
    request in the thread pool, ``create_engine``'s defaults), on a fresh store of each kind
    measured (SQLite, and PostgreSQL with as many processes as (c)), served like the bare
    endpoint; every receiver target of the round prints its ratio over it (``/peer``).

Modules: ``targets`` (what is measured: the bare endpoint, the receiver's configuration and
stores), ``peer`` (the hand-written receiver), ``wrk`` (the load generator and ``bench.lua``, its script), ``proc`` (CPU and memory
accounting from /proc), ``runs`` (starting, warming up and measuring each target; the store
check), ``__main__`` (the command line and the summary).

This is a measuring tool, not a test: nothing here passes or fails on speed.
"""
