"""The chunk format shared by the agent (which encodes) and the cloud (which stores and decodes).

A protected disk is cut into blocks of :data:`BLOCK_SIZE` bytes; one block is one chunk. A
chunk is named by a keyed BLAKE3 hash of its plaintext (:func:`chunk_id`) and travels and rests
as a *frame* (:func:`encode_chunk`; several chunks compressed together: :func:`encode_group`):
a small header, zstd-compressed payload, and AES-256-GCM when the VM uses a customer-managed
key (:class:`CustomerKey`). A disk's block map (block index -> chunk id), as the agent ships
it and the cloud builds a point from it, is a :class:`BlockMap`.
"""

from chunkfmt.blockmap import BlockMap
from chunkfmt.customerkey import CustomerKey
from chunkfmt.frame import (
    COMPRESSION,
    DEFAULT_COMPRESSION,
    FLAG_COMPRESSED,
    FLAG_ENCRYPTED,
    FLAG_GROUP,
    FRAME_MAGIC,
    FRAME_VERSION,
    HEADER_SIZE,
    NONCE_SIZE,
    Compression,
    FrameHeader,
    decode_chunk,
    encode_chunk,
    encode_group,
    parse_header,
    regroup,
    rewritable_group,
)
from chunkfmt.ids import BLOCK_SIZE, ID_SIZE, ZERO_ID, chunk_id, is_zero_block, vault_id_key

__all__ = [
    "BLOCK_SIZE",
    "COMPRESSION",
    "DEFAULT_COMPRESSION",
    "FLAG_COMPRESSED",
    "FLAG_ENCRYPTED",
    "FLAG_GROUP",
    "FRAME_MAGIC",
    "FRAME_VERSION",
    "HEADER_SIZE",
    "ID_SIZE",
    "NONCE_SIZE",
    "ZERO_ID",
    "BlockMap",
    "Compression",
    "CustomerKey",
    "FrameHeader",
    "chunk_id",
    "decode_chunk",
    "encode_chunk",
    "encode_group",
    "is_zero_block",
    "parse_header",
    "regroup",
    "rewritable_group",
    "vault_id_key",
]
