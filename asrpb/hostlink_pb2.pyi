from asrpb import common_pb2 as _common_pb2
from asrpb import control_pb2 as _control_pb2
from asrpb import inventory_pb2 as _inventory_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HostInventory(_message.Message):
    __slots__ = ("vms", "generated_at", "replica_address", "replica_free_bytes")
    VMS_FIELD_NUMBER: _ClassVar[int]
    GENERATED_AT_FIELD_NUMBER: _ClassVar[int]
    REPLICA_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    vms: _containers.RepeatedCompositeFieldContainer[_inventory_pb2.Vm]
    generated_at: float
    replica_address: str
    replica_free_bytes: int
    def __init__(self, vms: _Optional[_Iterable[_Union[_inventory_pb2.Vm, _Mapping]]] = ..., generated_at: _Optional[float] = ..., replica_address: _Optional[str] = ..., replica_free_bytes: _Optional[int] = ...) -> None: ...
