"""Block size and chunk ids.

``BLOCK_SIZE`` is 64 KiB: the change-tracking granularity *and* the chunk size (one disk block
is one chunk; the last block of a disk may be short).

Why 64 KiB:

* Metadata per GiB. Every block costs one 32-byte id in the recovery point's Merkle tree and
  one row in the cloud's chunk index. At 64 KiB that is 16,384 ids (512 KiB of tree) per GiB
  and 512 MiB of tree leaves for a full 1 TiB disk, which SQLite and the tree walk handle
  comfortably. 4 KiB blocks would be 16x that (8 GiB of leaves per TiB).
* Write amplification. A guest write of 4 KiB dirties a whole block, so the agent ships up to
  64 KiB for it. Larger blocks (1 MiB, as some trackers use) would ship up to 256x the data for
  scattered small writes; 64 KiB keeps random-write workloads cheap to replicate.
* Transport. One gRPC message per block would cap near 70 MB/s (about 1,100 calls/s), so the
  agent batches many 64 KiB frames into each 1-4 MiB streamed message instead of making
  blocks larger; zstd and AES-GCM are both efficient at this size.
"""

from __future__ import annotations

import blake3

BLOCK_SIZE = 64 * 1024
ID_SIZE = 32

# Reserved id for a block that is entirely zero bytes. Such blocks are never stored: a keyed
# BLAKE3 output equal to 32 zero bytes has probability 2**-256, so the value cannot collide
# with a real chunk id.
ZERO_ID = bytes(ID_SIZE)

_ZERO_BLOCK = bytes(BLOCK_SIZE)

# Domain-separation context for vault-derived id keys (BLAKE3 derive_key mode); changing it
# changes every chunk id of unencrypted VMs, so it is part of the format.
_VAULT_ID_CONTEXT = "site-recovery chunkfmt v1 vault chunk-id key"


def vault_id_key(vault_id: str) -> bytes:
    """The id key for VMs without a customer-managed key: derived from the vault id, so that
    ids of the same block differ between vaults (no cross-vault content probing)."""
    return blake3.blake3(vault_id.encode("utf-8"), derive_key_context=_VAULT_ID_CONTEXT).digest()


def chunk_id(id_key: bytes, plaintext: bytes | memoryview) -> bytes:
    """The 32-byte keyed BLAKE3 hash naming a chunk. Callers map all-zero blocks to
    :data:`ZERO_ID` themselves (see :func:`is_zero_block`); this function never does."""
    if len(id_key) != 32:
        raise ValueError("id_key must be 32 bytes")
    return blake3.blake3(plaintext, key=id_key).digest()


def is_zero_block(data: bytes | memoryview) -> bool:
    """True when ``data`` is all zero bytes (compares against a preallocated zero block)."""
    n = len(data)
    if n <= BLOCK_SIZE:
        # startswith compares with memcmp for any buffer (``memoryview == bytes`` goes byte
        # by byte, ~50x slower)
        return _ZERO_BLOCK.startswith(data)
    return bytes(data).count(0) == n
