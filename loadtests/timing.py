"""Does a wrong credential's position leak through timing?  Prints figures; asserts nothing.

    .venv/bin/python loadtests/timing.py [--trials 10000]

Times ``Verifier.verify`` for a Bearer token that is wrong in its first byte, wrong in its last
byte, and random of the same length, interleaved so drift hits all alike, and the same for Basic
passwords. Prints medians and Welch's t between "wrong first" and "wrong last"; |t| well under 3
means no difference this measurement can see.
"""

from __future__ import annotations

import argparse
import base64
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from receiver.ingest.verifier import Verifier

SECRET = "tok-" + "7f3a9c1e" * 6


def welch_t(a: list[float], b: list[float]) -> float:
    va, vb = statistics.variance(a), statistics.variance(b)
    spread: float = (va / len(a) + vb / len(b)) ** 0.5
    return (statistics.fmean(a) - statistics.fmean(b)) / spread


def measure(verifier: Verifier, headers: dict[str, bytes], trials: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in headers}
    names = list(headers)
    clock = time.perf_counter_ns
    for _ in range(trials):
        random.shuffle(names)
        for name in names:
            header = headers[name]
            started = clock()
            verifier.verify(header)
            samples[name].append(float(clock() - started))
    return samples


def report(title: str, samples: dict[str, list[float]]) -> None:
    print(title)
    for name, values in samples.items():
        trimmed = sorted(values)[: int(len(values) * 0.99)]  # drop scheduler outliers
        print(
            f"  {name:<12} median {statistics.median(trimmed):8.0f} ns   mean {statistics.fmean(trimmed):8.0f} ns"
        )
    first = sorted(samples["wrong first"])[: int(len(samples["wrong first"]) * 0.99)]
    last = sorted(samples["wrong last"])[: int(len(samples["wrong last"]) * 0.99)]
    print(f"  Welch t (wrong first vs wrong last): {welch_t(first, last):+.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=10_000)
    args = parser.parse_args()
    bearer = Verifier("t", bearer=[SECRET])
    report(
        f"Bearer, {args.trials} trials each",
        measure(
            bearer,
            {
                "right": f"Bearer {SECRET}".encode(),
                "wrong first": f"Bearer X{SECRET[1:]}".encode(),
                "wrong last": f"Bearer {SECRET[:-1]}X".encode(),
                "random": b"Bearer " + bytes(random.choice(b"abcdef0123456789") for _ in SECRET),
            },
            args.trials,
        ),
    )
    basic = Verifier("t", basic=[("ons", SECRET)])

    def header(user: str, password: str) -> bytes:
        return b"Basic " + base64.b64encode(f"{user}:{password}".encode())

    report(
        f"Basic, {args.trials} trials each",
        measure(
            basic,
            {
                "right": header("ons", SECRET),
                "wrong first": header("ons", "X" + SECRET[1:]),
                "wrong last": header("ons", SECRET[:-1] + "X"),
                "wrong user": header("onz", SECRET),
            },
            args.trials,
        ),
    )


if __name__ == "__main__":
    main()
