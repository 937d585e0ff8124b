"""Both committers offer what the store asks of a group commit (the ``Committer`` protocol)."""

from __future__ import annotations

import inspect

import pytest

from receiver.store import Committer
from receiver.store.committer import CommitHealth
from receiver.store.process import ProcessCommitter
from receiver.store.thread import ThreadCommitter

# mypy checks these assignments against the protocol; the test checks the running code.
COMMITTERS: list[type[Committer]] = [ThreadCommitter, ProcessCommitter]


@pytest.mark.parametrize("committer", COMMITTERS, ids=lambda c: c.__name__)
def test_each_committer_has_every_member_of_the_protocol(committer: type[Committer]) -> None:
    for name in ("submit", "close", "failing"):
        ours = inspect.signature(getattr(committer, name))
        wanted = inspect.signature(getattr(Committer, name))
        assert list(ours.parameters) == list(wanted.parameters), name
    assert isinstance(inspect.getattr_static(committer, "pid"), property)
    # last_success, last_failure and started, with the readiness rule that reads them.
    assert issubclass(committer, CommitHealth)
