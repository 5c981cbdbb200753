"""BlockChanges (the cloud's packed map of a point's changed blocks) behaves exactly like the
dict it replaces, for any order and any duplicates in what the agent sends."""

from __future__ import annotations

from array import array

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloudsvc.vaultstore import BlockChanges

pairs = st.lists(st.tuples(st.integers(0, 2**40), st.binary(min_size=32, max_size=32)), max_size=200)


@given(pairs, st.booleans())
def test_same_as_a_dict(items: list[tuple[int, bytes]], ascending: bool) -> None:
    if ascending:
        items = sorted(dict(items).items())
    expected = dict(items)  # a later duplicate wins
    got = BlockChanges.from_parts(array("Q", [b for b, _ in items]), b"".join(i for _, i in items))
    assert dict(got) == expected
    assert len(got) == len(expected)
    assert list(got) == sorted(expected) and list(got.indexes) == sorted(expected)
    assert list(got.ids()) == [expected[k] for k in sorted(expected)]
    for block in list(expected)[:20]:
        assert block in got and got[block] == expected[block]
    for absent in (-1, 2**40 + 1, "x"):
        assert absent not in got
    assert BlockChanges.from_mapping(expected) == got


def test_refuses_ids_that_do_not_match_the_indexes() -> None:
    with pytest.raises(ValueError, match="one 32-byte id per block"):
        BlockChanges(array("Q", [1, 2]), b"\0" * 33)
