from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorDetail(_message.Message):
    __slots__ = ("code", "exit_code", "message", "possible_causes", "recommended_action", "details")
    CODE_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    POSSIBLE_CAUSES_FIELD_NUMBER: _ClassVar[int]
    RECOMMENDED_ACTION_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    code: str
    exit_code: int
    message: str
    possible_causes: _containers.RepeatedScalarFieldContainer[str]
    recommended_action: str
    details: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, code: _Optional[str] = ..., exit_code: _Optional[int] = ..., message: _Optional[str] = ..., possible_causes: _Optional[_Iterable[str]] = ..., recommended_action: _Optional[str] = ..., details: _Optional[_Iterable[str]] = ...) -> None: ...

class Empty(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
