"""Handler results: what the store cannot hold fails the handler's own save, with its reason, and
never the saves it would have been written with; any JSON value comes back as it was saved."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receiver.store import Store
from receiver.worker.results import StoreResults

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("kind", "key", "why"),
    [
        ("duimp", "k" * 201, "result key 'kkkkk"),
        ("d" * 65, "key", "result kind 'ddddd"),
        ("duimp", "key\x00", "contains a NUL character"),
        ("duimp", "key\ud800", "contains a lone surrogate"),
    ],
)
async def test_a_kind_or_key_the_store_cannot_hold_fails_its_own_save(
    store: Store, kind: str, key: str, why: str
) -> None:
    results = StoreResults(store)
    outcomes = await asyncio.gather(
        results.save("duimp", "before", 1),
        results.save(kind, key, 2),
        results.save("duimp", "after", 3),
        return_exceptions=True,
    )
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], ValueError)
    assert why in str(outcomes[1]) and "cannot be stored" in str(outcomes[1])
    assert [await results.load("duimp", k) for k in ("before", "after")] == [1, 3]


# What stores refuse, drawn often: a lone surrogate (JSON's "\ud800" spells one) and NUL.
AWKWARD = st.sampled_from(["\ud800", "a\udfffb", "\x00", "é\x00\ud83d"])
JSON = st.recursive(
    AWKWARD
    | st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(codec=None, exclude_categories=())),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(st.characters(codec=None, exclude_categories=())), children)
    ),
    max_leaves=12,
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(value=JSON)
async def test_any_json_value_comes_back_as_saved(store: Store, value: Any) -> None:
    """Lone surrogates and NUL included: kept with JSON's escapes, loaded back the same."""
    results = StoreResults(store)
    await results.save("any", "value", value)
    loaded = await results.load("any", "value")
    assert json.dumps(loaded, sort_keys=True) == json.dumps(value, sort_keys=True)
