"""An import-linter contract that the built-in types cannot express: which of our modules may
import an external package's internals (``uvicorn.protocols``, ``uvicorn.supervisors``).

import-linter sees an external package as its top-level name only (a ``forbidden`` contract
refuses ``uvicorn.protocols``: "subpackages of external packages are not valid"), so this reads
the import statements grimp recorded for each importer of the package, line by line. An import
of the package itself followed by attribute access (``import uvicorn``, then
``uvicorn.protocols.x``) is not seen; nothing of ours does that, and a review would.

pyproject.toml registers it (``contract_types``) and ``lint-imports`` runs it with the others.
"""

from __future__ import annotations

import re
from typing import Any, cast

from grimp import ImportGraph
from importlinter import Contract, ContractCheck, fields, output


class ExternalInternalsContract(Contract):
    """Only ``allowed_importers`` may import ``internals`` (dotted names under one external
    package, such as ``uvicorn.protocols``); everything else of ours may import the package's
    public names."""

    type_name = "external_internals"

    internals = fields.ListField(subfield=fields.StringField())
    allowed_importers = fields.ListField(subfield=fields.StringField())

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:
        # The fields hold the parsed options once the contract is made.
        internals = cast(list[str], self.internals)
        allowed = set(cast(list[str], self.allowed_importers))
        packages = {name.split(".")[0] for name in internals}
        pattern = re.compile(
            r"\b(?:from|import)\s+(" + "|".join(re.escape(name) for name in internals) + r")\b"
        )
        found: list[dict[str, Any]] = []
        for package in sorted(packages):
            if package not in graph.modules:
                continue
            for importer in sorted(graph.find_modules_that_directly_import(package)):
                if importer in allowed:
                    continue
                for detail in graph.get_import_details(importer=importer, imported=package):
                    match = pattern.search(str(detail["line_contents"]))
                    if match:
                        found.append({**detail, "internal": match.group(1)})
        return ContractCheck(kept=not found, metadata={"found": found})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for detail in check.metadata["found"]:
            output.print_error(
                f"{detail['importer']} imports {detail['internal']} "
                f"(l.{detail['line_number']}: {detail['line_contents']})",
                bold=False,
            )
            output.new_line()
