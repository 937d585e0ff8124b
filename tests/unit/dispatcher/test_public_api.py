"""The dispatcher's public namespace is exactly ``__all__``, and each name says what it is."""

from __future__ import annotations

import inspect

import receiver.dispatcher as package


def test_the_public_namespace_is_exactly_all() -> None:
    # Submodules appear as attributes once imported; they are not part of the namespace's API.
    public = {
        name
        for name, value in vars(package).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert public == set(package.__all__)
    for name in package.__all__:
        assert getattr(package, name).__doc__, f"{name} has no docstring"
