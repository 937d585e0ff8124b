"""The ``receiver`` command (``receiver.runtime.cli.commands``), split by command group."""

from receiver.runtime.cli.commands import main

__all__ = ["main"]
