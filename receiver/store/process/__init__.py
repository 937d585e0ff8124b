"""The process committer: group commit in a writer process beside each serving process.

``client`` is the serving process's side (``ProcessCommitter``), ``child`` the writer process's,
``wire`` the frames between them over a Unix socket; ``python -m receiver.store.process FD`` runs
the writer process (started and restarted by ``ProcessCommitter``).
"""

from receiver.store.process.client import ProcessCommitter

__all__ = ["ProcessCommitter"]
