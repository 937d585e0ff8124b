"""CPU and memory accounting from /proc: which process plays which role, what each spent per
request, and the CPU ceiling those costs allow."""

from __future__ import annotations

import contextlib
import os
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple


def process_tree(pid: int) -> list[int]:
    pids = [pid]
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            children = (task / "children").read_text().split()
            for child in children:
                pids.extend(process_tree(int(child)))
    return pids


def is_writer(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return b"receiver.store.process" in Path(f"/proc/{pid}/cmdline").read_bytes()
    return False


def process_role(pid: int, main: int) -> str | None:
    """'server', or 'supervisor'/'worker' with several processes, 'writer' for a serving
    process's writer; None for helpers to ignore."""
    with contextlib.suppress(OSError):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"resource_tracker" in cmdline:
            return None
    if is_writer(pid):
        return "writer"
    if pid != main:
        return "worker"
    serving = [p for p in process_tree(main) if not is_writer(p)]
    return "supervisor" if len(serving) > 1 else "server"


def pss_mib(pid: int) -> float:
    """Proportional set size now: resident memory with shared pages split among their users, so
    that a serving process and its writer process are not both charged for the same libraries."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mib(pid: int) -> float | None:
    """VmHWM: the peak resident set of a live process, in MiB."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far (0.0 once it is gone)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        # The fields after the command name, which is in parentheses and may hold spaces.
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return 0.0


def database_pids() -> list[int]:
    """Every PostgreSQL server process on this machine (backends and background workers)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
    return pids


def machine_busy() -> tuple[int, int, int]:
    """Jiffies since boot, all CPUs: (busy, softirq, total). Busy counts softirq and steal."""
    user, nice, system, idle, iowait, irq, softirq, steal = (
        int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    busy = user + nice + system + irq + softirq + steal
    return busy, softirq, busy + idle + iowait


class Ceiling(NamedTuple):
    """The most requests per second a run's CPU costs allow (``CpuUse.ceiling``)."""

    rps: float
    bound: str  # what sets it: "cores", "serving process" or "load generator"


@dataclass
class CpuUse:
    """Where one measured run's CPU went, per request, and how busy the machine was."""

    per_request_us: dict[str, float]
    machine_busy: float  # share of all cores' time
    softirq: float  # share of all cores' time spent in softirq (loopback TCP, mostly)

    def describe(self) -> str:
        roles = ", ".join(f"{role} {us:.1f}" for role, us in self.per_request_us.items())
        return (
            f"CPU per request (us): {roles}; machine {100 * self.machine_busy:.0f}% busy "
            f"({100 * self.softirq:.0f}% softirq) on {os.cpu_count()} cores"
        )

    def ceiling(self, cores: int, serving_processes: int, generator_threads: int) -> Ceiling:
        """The most requests per second these CPU costs allow, had no process ever waited.

        Every role's CPU has to fit in the machine's cores; each serving process (one event loop)
        in one core; the load generator in its threads. A run below its ceiling lost the rest to
        waiting (for a commit, for its turn on a core); a target above the ceiling can only be
        met by spending less CPU per request.
        """
        us = self.per_request_us
        bounds = {"cores": cores * 1e6 / max(1e-9, sum(us.values()))}
        if us.get("serving"):
            bounds["serving process"] = serving_processes * 1e6 / us["serving"]
        if us.get("load generator"):
            bounds["load generator"] = generator_threads * 1e6 / us["load generator"]
        bound = min(bounds, key=lambda name: bounds[name])
        return Ceiling(bounds[bound], bound)


def cpu_use(
    roles: dict[int, str],
    before: dict[int, float],
    machine_before: tuple[int, int, int],
    children_before: resource.struct_rusage,
    requests: int,
) -> CpuUse:
    """CPU per request by role since ``before``; the load generator's is that of the children
    this process waited for meanwhile (wrk, and nothing else runs as our child then)."""
    spent: dict[str, float] = {}
    for pid, role in roles.items():
        spent[role] = spent.get(role, 0.0) + cpu_seconds(pid) - before[pid]
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    spent["load generator"] = (children.ru_utime - children_before.ru_utime) + (
        children.ru_stime - children_before.ru_stime
    )
    busy, softirq, total = machine_busy()
    elapsed = max(1, total - machine_before[2])
    return CpuUse(
        {role: 1e6 * seconds / max(1, requests) for role, seconds in spent.items()},
        (busy - machine_before[0]) / elapsed,
        (softirq - machine_before[1]) / elapsed,
    )
