"""CPU per notification of the typed payloads: ``receiver.payloads.validate_payload`` (what the
planner adds when it routes a notification, and the worker when it builds ``note.parsed``)
beside ``receiver.sources.parse`` (what both did already), on the kit's payload of one event per
model.

    .venv/bin/python loadtests/payload_validation.py [--number 20000] [--repeat 5]

Best of ``--repeat`` rounds of ``--number`` calls each; a measuring tool, nothing passes or fails.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import timeit
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from receiver.payloads import validate_payload
from receiver.sources import parse
from receiver.testing import payload

EVENTS = (
    ("pucomex", "dimp-situacao-import"),
    ("pucomex", "duimp.desembaraco"),
    ("pucomex", "lpco.registro"),
    ("pucomex", "cctr-carga-liberada"),
    ("sintegre", "produto.publicado"),
    ("invoicy", "nfe.evento"),
)


def best_us(call: Callable[[], object], number: int, repeat: int) -> float:
    return min(timeit.repeat(call, number=number, repeat=repeat)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"{'event':34} {'validate us':>12} {'parse us':>10}")
    for source, event in EVENTS:
        data = payload(event, source)
        body = json.dumps(data, ensure_ascii=False).encode()
        path_event = event if source == "pucomex" else None
        validate = best_us(
            functools.partial(validate_payload, source, event, data), args.number, args.repeat
        )
        parsed = best_us(
            functools.partial(parse, source, body, path_event), args.number, args.repeat
        )
        print(f"{source + ' ' + event:34} {validate:12.2f} {parsed:10.2f}")


if __name__ == "__main__":
    main()
