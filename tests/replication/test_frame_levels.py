"""Issue 14: which zstd level a cycle frames each new block at (``chunkfmt.Compression``).
A unit test of ``Cycle._process`` with a stand-in snapshot and vault: ``strong`` compresses
a group at level 3 and a block that is alone in its frame at level 1 (level 3 gains ~2% on
one 64 KiB block for 1.5x the CPU, and small scattered writes are most of what a busy
site's cycles carry); the other policies keep one level."""

from __future__ import annotations

import os
import queue
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from agent.replication import cycle as cycle_mod
from agent.replication.cycle import Cycle, _Job
from asrpb import replication_pb2
from chunkfmt import BLOCK_SIZE, COMPRESSION
from chunkfmt.keys import Keys

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


def _levels(monkeypatch: pytest.MonkeyPatch, compression: str, blocks: list[int]) -> list[tuple[str, int, int]]:
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
        c = Cycle(_Vault(), None, pool, Keys(b"k" * 32), compression=compression)  # type: ignore[arg-type]
        buffers: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        done = c._process(_Snapshot(set()), _Job(0, "incremental", blocks, b""), "s", buffers)  # type: ignore[arg-type]
    assert len(done.frames) + sum(len(ids) for ids, _ in done.groups) == len(blocks)
    return seen


def test_strong_frames_a_lone_block_at_level_1_and_groups_at_level_3(monkeypatch: pytest.MonkeyPatch) -> None:
    strong = COMPRESSION["strong"]
    assert (strong.level, strong.per_frame, strong.lone_level) == (3, 16, 1)
    # one new block in its window: alone in its frame
    assert _levels(monkeypatch, "strong", [7]) == [("chunk", 1, 1)]
    # 17 new blocks: a group of 16 at level 3, and the 17th alone at level 1
    assert _levels(monkeypatch, "strong", list(range(100, 117))) == [("group", 16, 3), ("chunk", 1, 1)]


@pytest.mark.parametrize("name", ["fast", "balanced"])
def test_per_block_policies_keep_one_level(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    level = COMPRESSION[name].level
    assert COMPRESSION[name].lone_level == level and COMPRESSION[name].per_frame == 1
    assert _levels(monkeypatch, name, [1, 2, 3]) == [("chunk", 1, level)] * 3
