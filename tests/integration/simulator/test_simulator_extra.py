"""trustme is the simulator extra's, not the receiver's: without it, ``receiver demo`` says in one
line which extra to install (exit 2), and everything else runs as before."""

from __future__ import annotations

import subprocess
import sys

# The receiver command with trustme missing, as on a machine that installed no extra.
WITHOUT_TRUSTME = (
    "import sys; sys.modules['trustme'] = None; "
    "from receiver.runtime.cli import main; sys.argv = ['receiver', *sys.argv[1:]]; main()"
)


def receiver_without_trustme(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_TRUSTME, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_demo_without_the_extra_names_it_in_one_line() -> None:
    done = receiver_without_trustme("demo", "--duimps", "1")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "receiver: receiver demo needs the simulator extra (trustme makes its test "
        "certificates): pip install 'portal-receiver[simulator]'"
    ]
    assert done.stdout == ""


def test_the_rest_needs_no_extra() -> None:
    for args in (["--help"], ["dispatcher", "--help"], ["serve", "--help"], ["events"]):
        done = receiver_without_trustme(*args)
        assert done.returncode == 0, (args, done.stderr)
    code = (
        "import sys; sys.modules['trustme'] = None; "
        "import receiver.simulator, receiver.runtime.services"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
