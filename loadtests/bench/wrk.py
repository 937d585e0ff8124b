"""The load generator: wrk, driven by ``bench.lua`` (unique ~1 KiB PUCOMEX bodies, the id of every
200 recorded, so the store check is by id)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "bench.lua"
BODY_BYTES = 1024


@dataclass
class Load:
    requests: int
    seconds: float
    ok: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    statuses: dict[str, int]
    ids: list[str]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


_ANSWER_ID = re.compile(r'"id":"([0-9A-Z]+)"')


def answer_id(body: str) -> str:
    """The notification id in a 200's body ("" if it has none, which the store check counts
    as missing)."""
    found = _ANSWER_ID.search(body)
    return found.group(1) if found else ""


def wrk_version(wrk: str) -> str:
    out = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
    return (out.stdout + out.stderr).splitlines()[0].strip()


def run_wrk(
    wrk: str,
    script: Path,
    url: str,
    *,
    seconds: float,
    connections: int,
    threads: int,
    run_tag: str,
    token: str,
    workdir: Path,
) -> Load:
    out = workdir / f"ids-{run_tag}.txt"
    env = {
        **os.environ,
        "BENCH_RUN": run_tag,
        "BENCH_TOKEN": token,
        "BENCH_OUT": str(out),
        "BENCH_BODY_BYTES": str(BODY_BYTES),
    }
    cmd = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "5s",
        "-s",
        str(script),
        url,
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 60)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    data = json.loads(line[len("BENCH_JSON ") :])
    ids = [answer_id(line) for line in out.read_text().splitlines() if line]
    errors = sum(data[k] for k in ("connect", "read", "write", "status", "timeout"))
    return Load(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        ok=data["ok"],
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        errors=errors,
        statuses=data["statuses"],
        ids=ids,
    )
