"""The Merkle tree of a point: a new tree is its base with the changes laid over it.

A model (a dict of block -> id) against ``build_tree`` + ``iter_blocks`` for random bases,
changes given as a ``BlockChanges`` (what the wire builds) or a plain mapping, disks that grew
or shrank, and bases of another fanout. The leaf fast path (the base's leaf read once, the
changes of its span laid over it) must give the same tree as a lookup per block."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from chunkfmt import BLOCK_SIZE, ZERO_ID
from cloudsvc.vaultstore import merkle
from cloudsvc.vaultstore.records import BlockChanges


def _cid(n: int) -> bytes:
    return n.to_bytes(4, "little") + bytes(28) if n else ZERO_ID


class _Nodes:
    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def load(self, nid: bytes) -> merkle.Node:
        return merkle.decode_node(self.data[nid])

    def write(self, nid: bytes, data: bytes) -> None:
        self.data[nid] = data


def _build(nodes: _Nodes, blocks: int, fanout: int, changes: dict[int, bytes], base: merkle.TreeView | None,
           packed: bool) -> bytes:
    given_changes = BlockChanges.from_mapping(changes) if packed else changes
    return merkle.build_tree(loader=nodes.load, writer=nodes.write, virtual_size=blocks * BLOCK_SIZE,
                             fanout=fanout, changes=given_changes, base=base)


def _blocks_and_changes(max_blocks: int = 70) -> st.SearchStrategy[tuple[int, dict[int, bytes]]]:
    return st.integers(1, max_blocks).flatmap(lambda n: st.tuples(
        st.just(n), st.dictionaries(st.integers(0, n - 1), st.integers(0, 5).map(_cid), max_size=n)))


@settings(max_examples=300, deadline=None)
@given(first=_blocks_and_changes(), second=_blocks_and_changes(), fanouts=st.tuples(st.integers(2, 5),
                                                                                    st.integers(2, 5)),
       packed=st.booleans())
def test_a_tree_is_its_base_with_the_changes_laid_over_it(
        first: tuple[int, dict[int, bytes]], second: tuple[int, dict[int, bytes]], fanouts: tuple[int, int],
        packed: bool) -> None:
    nodes = _Nodes()
    (n1, c1), (n2, c2) = first, second
    f1, f2 = fanouts
    root1 = _build(nodes, n1, f1, c1, None, packed)
    base = merkle.TreeView(nodes.load, root1, n1, f1)
    root2 = _build(nodes, n2, f2, c2, base, packed)
    model = {i: ZERO_ID for i in range(n2)}
    model.update({i: c for i, c in c1.items() if i < n2})
    model.update(c2)
    assert dict(merkle.iter_blocks(nodes.load, root2, n2, f2)) == model
    # the same content built from nothing gives the same root (trees are canonical)
    assert _build(_Nodes(), n2, f2, {i: c for i, c in model.items() if c != ZERO_ID}, None, packed) == root2


def test_leaf_ids_pads_beyond_the_tree_and_refuses_spans_of_two_leaves() -> None:
    nodes = _Nodes()
    root = _build(nodes, 6, 4, {0: _cid(1), 5: _cid(2)}, None, packed=True)
    view = merkle.TreeView(nodes.load, root, 6, 4)
    assert view.leaf_ids(0, 4) == [_cid(1), ZERO_ID, ZERO_ID, ZERO_ID]
    assert view.leaf_ids(4, 8) == [ZERO_ID, _cid(2), ZERO_ID, ZERO_ID]
    assert view.leaf_ids(8, 12) == [ZERO_ID] * 4
    for start, end in ((2, 6), (0, 5)):
        try:
            view.leaf_ids(start, end)
        except ValueError:
            continue
        raise AssertionError(f"leaf_ids({start}, {end}) spans two leaves and must be refused")
