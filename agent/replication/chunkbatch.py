"""``PutChunks`` messages built as their wire bytes.

A ``ChunkBatch`` (proto/asrpb/replication.proto) carries ~2 MiB of frames. Built with the
generated class, every frame was copied into the message and the message serialised again
by ``SerializeToString``: 2.0-2.8 ms of CPU per 2 MiB message in-process, holding the GIL,
in the thread that feeds gRPC; in a 1 GiB first copy that thread spent 0.16-0.2 CPU-s more
than with the bytes below (yappi, docs/benchmarks.md). The
agent's codec threads need that lock between their zstd and BLAKE3 calls. Here a message is
a list of byte strings (field keys, lengths, and the frames themselves, not copied) that
gRPC's serializer joins once.

The encoding is protobuf's: each field as key, length, bytes (every field of ``ChunkBatch`` is
length-delimited). Repeated fields may appear interleaved; a parser appends each in order,
so ``ids[i]`` still names ``frames[i]``. The field numbers come from the generated
descriptor; ``tests/replication/test_chunkbatch.py`` checks that the generated class parses
what this builds into the message it describes.
"""

from __future__ import annotations

from asrpb import replication_pb2

_FIELDS = replication_pb2.ChunkBatch.DESCRIPTOR.fields_by_name
# the one wire type of every ChunkBatch field: length-delimited (2)
_SESSION, _ID, _FRAME, _GROUP = (bytes([_FIELDS[name].number << 3 | 2])
                                 for name in ("session_id", "ids", "frames", "groups"))
# the method's path, from the generated service descriptor
PUT_CHUNKS = f"/{replication_pb2.DESCRIPTOR.services_by_name['Replication'].full_name}/PutChunks"


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


class ChunkBatch:
    """One ``PutChunks`` message: chunk frames under their ids, and group frames (which name
    their members in their own tables)."""

    __slots__ = ("_parts", "chunks", "groups")

    def __init__(self, session_id: str = "") -> None:
        data = session_id.encode()
        self._parts: list[bytes] = [_SESSION, _varint(len(data)), data] if data else []
        self.chunks = 0      # single-chunk frames in this message
        self.groups = 0      # group frames in this message

    def __bool__(self) -> bool:
        return bool(self.chunks or self.groups)

    def add(self, cid: bytes, frame: bytes) -> None:
        self._parts += (_ID, _varint(len(cid)), cid, _FRAME, _varint(len(frame)), frame)
        self.chunks += 1

    def add_group(self, frame: bytes) -> None:
        self._parts += (_GROUP, _varint(len(frame)), frame)
        self.groups += 1

    def encode(self) -> bytes:
        """The message's wire bytes (gRPC's request serializer)."""
        return b"".join(self._parts)

    def parsed(self) -> replication_pb2.ChunkBatch:
        """The message as the generated class reads it (for tests and fakes)."""
        return replication_pb2.ChunkBatch.FromString(self.encode())
