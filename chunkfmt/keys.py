"""The keys one VM's chunks are made with: the agent encodes with them, materialisation
decodes with them, so both sides hold the same two fields in the same order.

* ``id_key``: the key of the keyed BLAKE3 chunk ids (:func:`chunkfmt.chunk_id`);
* ``aead_key``: the AES-256-GCM key of the frames, or None when the VM is not encrypted.

An unencrypted VM's id key is derived from its vault id (:meth:`Keys.for_vault`); an
encrypted VM's keys both come from the site's customer-managed key
(:meth:`Keys.for_customer_key`), which the cloud never stores.
"""

from __future__ import annotations

from dataclasses import dataclass

from chunkfmt.customerkey import CustomerKey
from chunkfmt.ids import vault_id_key


@dataclass(frozen=True)
class Keys:
    id_key: bytes
    aead_key: bytes | None = None

    @classmethod
    def for_vault(cls, vault_id: str) -> Keys:
        """An unencrypted VM of vault ``vault_id``."""
        return cls(vault_id_key(vault_id))

    @classmethod
    def for_customer_key(cls, key: CustomerKey) -> Keys:
        """A VM encrypted with the customer-managed ``key``."""
        return cls(key.id_key, key.aead_key)

    @property
    def encrypted(self) -> bool:
        return self.aead_key is not None


__all__ = ["Keys"]
