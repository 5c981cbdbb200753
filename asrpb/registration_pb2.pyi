from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class RegisterRequest(_message.Message):
    __slots__ = ("vault_id", "role", "name", "csr_pem", "secret", "force", "version", "encryption", "key_fingerprint", "provider", "addresses")
    VAULT_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTION_FIELD_NUMBER: _ClassVar[int]
    KEY_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    vault_id: str
    role: str
    name: str
    csr_pem: bytes
    secret: str
    force: bool
    version: str
    encryption: bool
    key_fingerprint: str
    provider: str
    addresses: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, vault_id: _Optional[str] = ..., role: _Optional[str] = ..., name: _Optional[str] = ..., csr_pem: _Optional[bytes] = ..., secret: _Optional[str] = ..., force: _Optional[bool] = ..., version: _Optional[str] = ..., encryption: _Optional[bool] = ..., key_fingerprint: _Optional[str] = ..., provider: _Optional[str] = ..., addresses: _Optional[_Iterable[str]] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("certificate_pem", "service_ca_pem", "identity", "vault_name")
    CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    SERVICE_CA_PEM_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    VAULT_NAME_FIELD_NUMBER: _ClassVar[int]
    certificate_pem: bytes
    service_ca_pem: bytes
    identity: str
    vault_name: str
    def __init__(self, certificate_pem: _Optional[bytes] = ..., service_ca_pem: _Optional[bytes] = ..., identity: _Optional[str] = ..., vault_name: _Optional[str] = ...) -> None: ...
