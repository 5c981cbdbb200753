"""A storage account on the Azure Blob API (Azure Storage, or Azurite on one machine).

Objects are block blobs in one container. A single ``upload_blob`` call is atomic: the blob
appears only when its block list commits, and the service stores it durably before answering,
which is exactly the backend contract.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobServiceClient

from asrerrors import DiskFull, NotFound, StorageError
from cloudsvc.vaultstore.backend import ObjectInfo, check_name


class BlobBackend:
    def __init__(
        self,
        container: str,
        *,
        connection_string: str | None = None,
        account_url: str | None = None,
        account_key: str | None = None,
        account_name: str | None = None,
        create: bool = True,
    ) -> None:
        try:
            if connection_string:
                service = BlobServiceClient.from_connection_string(connection_string)
            elif account_url and account_key:
                credential: Any = {"account_name": account_name, "account_key": account_key}
                if account_name is None:
                    credential = account_key
                service = BlobServiceClient(account_url=account_url, credential=credential)
            else:
                raise StorageError("a blob backend needs a connection string or url and key")
            self._container = service.get_container_client(container)
            if create:
                try:
                    self._container.create_container()
                except ResourceExistsError:
                    pass
        except AzureError as exc:
            raise _azure_error(exc, f"cannot open container {container}") from exc
        self.container = container

    def put(self, name: str, data: bytes | memoryview) -> None:
        try:
            self._container.upload_blob(check_name(name), bytes(data), overwrite=True)
        except AzureError as exc:
            raise _azure_error(exc, f"cannot write {name}") from exc

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        if offset < 0 or (length is not None and length < 0):
            raise ValueError("offset and length must not be negative")
        if length == 0:
            self.stat(name)
            return b""
        try:
            blob = self._container.get_blob_client(check_name(name))
            return blob.download_blob(offset=offset, length=length).readall()
        except ResourceNotFoundError as exc:
            raise NotFound(f"object {name} does not exist in the storage account") from exc
        except HttpResponseError as exc:
            # Reading from or past the end of an object: the blob API answers 416, our
            # contract answers "no bytes".
            if exc.status_code == 416:
                self.stat(name)
                return b""
            raise _azure_error(exc, f"cannot read {name}") from exc
        except AzureError as exc:
            raise _azure_error(exc, f"cannot read {name}") from exc

    def list(self, prefix: str = "") -> Iterator[str]:
        try:
            yield from self._container.list_blob_names(name_starts_with=prefix or None)
        except AzureError as exc:
            raise _azure_error(exc, f"cannot list {prefix!r}") from exc

    def delete(self, name: str) -> None:
        try:
            self._container.delete_blob(check_name(name))
        except ResourceNotFoundError:
            return
        except AzureError as exc:
            raise _azure_error(exc, f"cannot delete {name}") from exc

    def stat(self, name: str) -> ObjectInfo:
        try:
            props = self._container.get_blob_client(check_name(name)).get_blob_properties()
        except ResourceNotFoundError as exc:
            raise NotFound(f"object {name} does not exist in the storage account") from exc
        except AzureError as exc:
            raise _azure_error(exc, f"cannot stat {name}") from exc
        return ObjectInfo(name, int(props.size))

    def exists(self, name: str) -> bool:
        try:
            return bool(self._container.get_blob_client(check_name(name)).exists())
        except AzureError as exc:
            raise _azure_error(exc, f"cannot stat {name}") from exc

    def __repr__(self) -> str:
        return f"BlobBackend(container={self.container!r})"


def _azure_error(exc: AzureError, what: str) -> StorageError:
    # Capacity exhaustion has no dedicated blob error code; a 507 (Insufficient Storage) is the
    # closest signal services and Azurite send.
    if isinstance(exc, HttpResponseError) and exc.status_code == 507:
        return DiskFull(f"{what}: the storage account is full")
    return StorageError(f"{what}: {exc.__class__.__name__}: {str(exc).splitlines()[0]}")
