from asrpb import common_pb2 as _common_pb2
from asrpb import control_pb2 as _control_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class HeartbeatRequest(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: str
    def __init__(self, version: _Optional[str] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("server_time", "identity", "api_endpoints", "registration_endpoints")
    SERVER_TIME_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    API_ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    REGISTRATION_ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    server_time: float
    identity: str
    api_endpoints: _containers.RepeatedScalarFieldContainer[str]
    registration_endpoints: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, server_time: _Optional[float] = ..., identity: _Optional[str] = ..., api_endpoints: _Optional[_Iterable[str]] = ..., registration_endpoints: _Optional[_Iterable[str]] = ...) -> None: ...
