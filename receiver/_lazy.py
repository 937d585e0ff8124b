"""Package exports imported when first asked for (PEP 562), for the packages every process of ours
imports on its way to something else: the writer process reaches ``receiver.store.process``
through ``receiver`` and ``receiver.store``, and their exports' modules (httpx, pydantic,
alembic, the worker's tables) are not its business."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``, whose names in ``exports`` come from
    the module each names, imported on the first use and kept in the package from then on."""
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *exports})

    return __getattr__, __dir__
