"""The process committer: group commit in a writer process beside each serving process.

``client`` is the serving process's side (``ProcessCommitter``), ``child`` the writer process's,
``wire`` the frames between them over a Unix socket; ``python -m receiver.store.process FD`` runs
the writer process (started and restarted by ``ProcessCommitter``).
"""

import typing as _typing

if _typing.TYPE_CHECKING:
    from receiver.store.process.client import ProcessCommitter


def __getattr__(name: str) -> _typing.Any:
    # Imported when first asked for: the writer process imports this package on its way to
    # ``child`` and has no use for the serving process's side (asyncio, subprocess, metrics).
    if name != "ProcessCommitter":
        raise AttributeError(f"module 'receiver.store.process' has no attribute {name!r}")
    from receiver.store.process.client import ProcessCommitter

    globals()[name] = ProcessCommitter
    return ProcessCommitter


__all__ = ["ProcessCommitter"]
