"""Memory of a serving process under oversized request heads, from /proc/<pid>/status.

    .venv/bin/python loadtests/headers.py [--database postgresql://postgres@127.0.0.1:5432/test]

Starts `receiver serve --no-worker` (its own folder, an allowlist of 127.0.0.1), then, as an
unauthenticated client would: three connections at once each sending 8 MiB of headers (1,048
lines of 8 KB, then one line of 8 MiB); one
request with 5,000 headers; one with a 1 MiB header; and the same from 127.0.0.2, an address in
no allowlist. After each it prints the serving process's peak (VmHWM) and current (VmRSS)
resident memory, what each connection was answered, and how many notifications were stored
(must stay 0). Bounded in time; talks to loopback only.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import socket
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.acceptance.conftest import Deployment, free_port  # noqa: E402
from tests.conftest import reset_postgres  # noqa: E402


def memory(pid: int) -> dict[str, int]:
    """VmHWM and VmRSS of ``pid``, in KiB."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "VmRSS"):
            fields[name] = int(value.split()[0])
    return fields


def send_head(port: int, lines: list[bytes], source: str = "127.0.0.1") -> str:
    """Send a POST whose head is ``lines``, 64 KiB at a time; say how it ended."""
    sock = socket.socket()
    sock.settimeout(30)
    sock.bind((source, 0))
    sent = 0
    try:
        sock.connect(("127.0.0.1", port))
        data = b"POST /webhooks/pucomex HTTP/1.1\r\nHost: r\r\n" + b"".join(lines)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for start in range(0, len(data), 65536):
                sock.sendall(data[start : start + 65536])
                sent += min(65536, len(data) - start)
            sock.sendall(b"Content-Length: 0\r\n\r\n")
        try:
            answer = sock.recv(4096)
        except ConnectionResetError:
            return f"reset after {sent >> 10} KiB sent"
        status = answer.split(b"\r\n", 1)[0].decode(errors="replace") or "closed, no answer"
        return f"{status} after {sent >> 10} KiB sent"
    finally:
        sock.close()


def run(answers: list[str], index: int, port: int, lines: list[bytes], source: str) -> None:
    answers[index] = send_head(port, lines, source)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database", default="sqlite", help="'sqlite' or a postgresql:// URL")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="receiver-headers-"))
    if args.database == "sqlite":
        url = f"sqlite:///{folder / 'receiver.db'}"
    else:
        url = args.database
        reset_postgres(url)
    deployment = Deployment(folder, url)
    port = free_port()
    server = deployment.serve(port, "--no-worker")
    eight_mib = [b"X-H%d: %s\r\n" % (n, b"b" * 8000) for n in range(1048)]
    one_line = [b"X-Long: " + b"l" * (8 << 20) + b"\r\n"]
    cases: list[tuple[str, list[tuple[list[bytes], str]]]] = [
        ("3 connections x 8 MiB of headers", [(eight_mib, "127.0.0.1")] * 3),
        ("3 connections x one 8 MiB header", [(one_line, "127.0.0.1")] * 3),
        ("5,000 headers", [([b"X-H%d: v\r\n" % n for n in range(5000)], "127.0.0.1")]),
        ("one 1 MiB header", [([b"X-Big: " + b"a" * (1 << 20) + b"\r\n"], "127.0.0.1")]),
        ("3 x 8 MiB from 127.0.0.2 (no allowlist)", [(eight_mib, "127.0.0.2")] * 3),
    ]
    try:
        start = memory(server.pid)
        print(f"{'case':<42} {'VmHWM MiB':>10} {'VmRSS MiB':>10}  answers")
        print(f"{'started':<42} {start['VmHWM'] / 1024:>10.1f} {start['VmRSS'] / 1024:>10.1f}")
        for name, connections in cases:
            answers: list[str] = [""] * len(connections)
            threads = [
                threading.Thread(target=run, args=(answers, i, port, lines, source))
                for i, (lines, source) in enumerate(connections)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            now = memory(server.pid)
            print(
                f"{name:<42} {now['VmHWM'] / 1024:>10.1f} {now['VmRSS'] / 1024:>10.1f}  "
                + "; ".join(sorted(set(answers)))
            )
        print(f"notifications stored         {len(deployment.inbox())}")
    finally:
        deployment.stop_all()
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
