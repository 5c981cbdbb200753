"""The one packed block map (chunkfmt.blockmap.BlockMap; the cloud's BlockChanges) behaves
exactly like the dict it replaces, for any order and any duplicates in what the agent sends,
and like a sorted list of (block, id) while the agent builds it and slices it for the wire."""

from __future__ import annotations

import struct
from array import array

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from chunkfmt import ID_SIZE, BlockMap
from cloudsvc.vaultstore import BlockChanges

pairs = st.lists(st.tuples(st.integers(0, 2**40), st.binary(min_size=32, max_size=32)), max_size=200)
ids = st.binary(min_size=ID_SIZE, max_size=ID_SIZE)


def test_the_cloud_and_the_agent_share_one_type() -> None:
    assert BlockChanges is BlockMap


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
    with pytest.raises(ValueError, match="one 32-byte id per block"):
        BlockChanges.from_parts(array("Q", [2, 1]), b"\0" * 32)


class AgentBuildsAMap(RuleBasedStateMachine):
    """The agent appends changed blocks in ascending order and ships slices of the map; the
    cloud rebuilds it from the slices. Model: a sorted list of (block, id)."""

    def __init__(self) -> None:
        super().__init__()
        self.map = BlockMap()
        self.model: list[tuple[int, bytes]] = []

    def _next(self, gap: int) -> int:
        return (self.model[-1][0] + 1 if self.model else 0) + gap

    @rule(gap=st.integers(0, 2**20), cid=ids)
    def append(self, gap: int, cid: bytes) -> None:
        block = self._next(gap)
        self.map.append(block, cid)
        self.model.append((block, cid))

    @rule(gaps=st.lists(st.tuples(st.integers(0, 1000), ids), max_size=20))
    def extend(self, gaps: list[tuple[int, bytes]]) -> None:
        items = []
        block = self._next(0)
        for gap, cid in gaps:
            block += gap
            items.append((block, cid))
            block += 1
        self.map.extend(items)
        self.model += items

    @rule(back=st.integers(0, 5), cid=ids)
    def out_of_order_is_refused(self, back: int, cid: bytes) -> None:
        if not self.model:
            return
        with pytest.raises(ValueError, match="ascending"):
            self.map.append(self.model[-1][0] - min(back, self.model[-1][0]), cid)

    @rule(data=st.data())
    def slices_for_the_wire(self, data: st.DataObject) -> None:
        n = len(self.model)
        start = data.draw(st.integers(0, n))
        stop = data.draw(st.integers(start, n + 3))
        part = self.model[start:stop]
        assert self.map.block_bytes(start, stop) == b"".join(struct.pack("<Q", b) for b, _ in part)
        assert self.map.id_bytes(start, stop) == b"".join(c for _, c in part)

    @invariant()
    def matches_the_model(self) -> None:
        assert len(self.map) == len(self.model)
        assert list(self.map) == [b for b, _ in self.model]
        assert list(self.map.ids()) == [c for _, c in self.model]
        if self.model:
            block, cid = self.model[len(self.model) // 2]
            assert self.map[block] == cid and block in self.map
        # What the cloud rebuilds from the wire parts is the same map.
        rebuilt = array("Q")
        rebuilt.frombytes(self.map.block_bytes(0, len(self.model)))
        assert BlockChanges.from_parts(rebuilt, self.map.id_bytes(0, len(self.model))) == self.map


TestAgentBuildsAMap = AgentBuildsAMap.TestCase
