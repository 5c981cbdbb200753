"""Issue 14: how a cycle frames new blocks (``chunkfmt.Compression``). A unit test of
``Cycle._process`` with a stand-in snapshot and vault: ``balanced`` and ``strong`` compress
groups at their level and a block alone in its frame at level 1 (level 2 or 3 gains ~2% on
one 64 KiB block for 1.5x the CPU, and small scattered writes are most of what a busy
site's cycles carry); an encrypted VM never groups; ``fast`` is one level
per block."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from agent.replication import cycle as cycle_mod
from agent.replication.cycle import Cycle, _Job
from asrpb import replication_pb2
from chunkfmt import BLOCK_SIZE, COMPRESSION
from chunkfmt.keys import Keys

PLAIN = Keys(b"k" * 32)
SEALED = Keys(b"k" * 32, b"a" * 32)
TEXT = b"".join(f"line {i}: the quick brown fox jumps over the lazy dog\n".encode() for i in range(40000))


class _Snapshot:
    """Blocks of distinct text, except ``random`` ones."""

    def __init__(self, random: set[int]) -> None:
        self.random = random

    def read_block_list(self, disk: int, blocks: Sequence[int], out: memoryview) -> memoryview:
        for i, b in enumerate(blocks):
            data = os.urandom(BLOCK_SIZE) if b in self.random else TEXT[b * 977:][:BLOCK_SIZE]
            out[i * BLOCK_SIZE:(i + 1) * BLOCK_SIZE] = data
        return out[:len(blocks) * BLOCK_SIZE]


class _Vault:
    """Answers ``Missing`` with every id asked about: all blocks are new."""

    def __call__(self, method: str, request: Any, timeout: float = 300.0) -> Any:
        assert method == "Missing"
        return replication_pb2.MissingReply(ids=request.ids)


def _levels(monkeypatch: pytest.MonkeyPatch, compression: str, blocks: list[int],
            keys: Keys = PLAIN) -> list[tuple[str, int, int]]:
    """(kind, members, level) of every frame one window of ``blocks`` makes."""
    seen: list[tuple[str, int, int]] = []
    chunk, group = cycle_mod.encode_chunk, cycle_mod.encode_group

    def encode_chunk(data: Any, aead: bytes | None, level: int = 1) -> bytes:
        seen.append(("chunk", 1, level))
        return chunk(data, aead, level)

    def encode_group(members: Any, aead: bytes | None, level: int = 3) -> bytes:
        seen.append(("group", len(members), level))
        return group(members, aead, level)

    monkeypatch.setattr(cycle_mod, "encode_chunk", encode_chunk)
    monkeypatch.setattr(cycle_mod, "encode_group", encode_group)
    with ThreadPoolExecutor(1) as pool:
        c = Cycle(_Vault(), None, pool, keys, compression=compression)  # type: ignore[arg-type]
        done = c._process(_Snapshot(set()), _Job(0, "incremental", blocks, b""), "s")  # type: ignore[arg-type]
    assert len(done.frames) + sum(len(ids) for ids, _ in done.groups) == len(blocks)
    return seen


def test_the_policies_levels_and_group_sizes() -> None:
    assert COMPRESSION["fast"] == (-1, 1, -1)
    assert COMPRESSION["balanced"] == (2, 32, 1)
    assert COMPRESSION["strong"] == (3, 64, 1)


@pytest.mark.parametrize("name", ["balanced", "strong"])
def test_groups_at_the_group_level_and_a_lone_block_at_level_1(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    comp = COMPRESSION[name]
    # one new block in its window: alone in its frame
    assert _levels(monkeypatch, name, [7]) == [("chunk", 1, 1)]
    # a window of 64 new blocks: full groups at the group level; one left over, alone
    expect = [("group", comp.per_frame, comp.level)] * (64 // comp.per_frame)
    assert _levels(monkeypatch, name, list(range(100, 164))) == expect
    assert _levels(monkeypatch, name, list(range(100, 100 + comp.per_frame + 1))) == [
        ("group", comp.per_frame, comp.level), ("chunk", 1, 1)]


@pytest.mark.parametrize("name", ["balanced", "strong"])
def test_an_encrypted_vm_never_groups(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """The cloud cannot regroup an encrypted group whose members die at different times, so
    every policy frames an encrypted VM's blocks one by one (at its lone level). ``strong``
    grouped them until 2026-12-03: under scattered overwrites such a VM then stored 1.30x
    ``balanced`` after 30 hours and climbing (bench/group_space.py)."""
    assert _levels(monkeypatch, name, [1, 2, 3], SEALED) == [("chunk", 1, 1)] * 3


def test_fast_keeps_one_level_per_block(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _levels(monkeypatch, "fast", [1, 2, 3]) == [("chunk", 1, -1)] * 3
