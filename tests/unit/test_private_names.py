"""Tests reach the code through its public names: no test imports a private name of a module of
ours (``from receiver.x import _y``), reads or replaces a private attribute of something else
than itself (``obj._attr``, ``setattr(obj, "_attr", ...)``), or patches one by name
(``mock.patch("receiver.x._y")``). What a test needs gets a public name, or is tested through
the public surface."""

from __future__ import annotations

import ast
import re

from tests.conftest import ROOT

OURS = ("receiver", "handlers", "loadtests")
PRIVATE_PATH = re.compile(r"\b(?:receiver|handlers|loadtests)(?:\.\w+)*\._[a-z]\w*")
# Public despite the underscore: named tuples' documented methods.
NAMEDTUPLE_API = frozenset({"_replace", "_asdict", "_fields", "_make", "_field_defaults"})


def private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__") and name not in NAMEDTUPLE_API


def findings(source: str) -> list[str]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in OURS:
            found += [
                (node.lineno, f"from {node.module} import {alias.name}")
                for alias in node.names
                if private(alias.name)
            ]
        elif isinstance(node, ast.Attribute) and private(node.attr):
            owner = node.value
            if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.Call) and node.args:
            name = ast.unparse(node.func)
            texts = [arg.value for arg in node.args if isinstance(arg, ast.Constant)]
            for text in texts:
                if not isinstance(text, str):
                    continue
                if name.endswith("setattr") and private(text):
                    found.append((node.lineno, f"{name}(..., {text!r}, ...)"))
                elif PRIVATE_PATH.search(text):
                    found.append((node.lineno, f"{name}({text!r})"))
    return [f"l.{line}: {what}" for line, what in sorted(found)]


def test_no_test_reaches_a_private_name() -> None:
    offences = {
        str(path.relative_to(ROOT)): found
        for path in sorted((ROOT / "tests").rglob("*.py"))
        if (found := findings(path.read_text(encoding="utf-8")))
    }
    assert offences == {}


def test_the_scan_sees_each_way_of_reaching_one() -> None:
    planted = """
from receiver.portal.subscriptions import _subscription, PortalCaller
writer._conn.close()
self._mine = 1
monkeypatch.setattr(writer, "_transaction", counted)
mock.patch("receiver.ids._random.getrandbits")
mock.patch("receiver.ids.time.time_ns")
item._replace(dedup_key="k")
"""
    assert findings(planted) == [
        "l.2: from receiver.portal.subscriptions import _subscription",
        "l.3: writer._conn",
        "l.5: monkeypatch.setattr(..., '_transaction', ...)",
        "l.6: mock.patch('receiver.ids._random.getrandbits')",
    ]
