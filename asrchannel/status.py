"""The error tree on the wire: AsrError <-> gRPC status with an ErrorDetail."""

from __future__ import annotations

import grpc
from google.rpc import status_pb2
from grpc_status import rpc_status

import asrerrors
from asrerrors import AsrError
from asrpb import common_pb2

_GRPC_CODES: dict[type[AsrError], grpc.StatusCode] = {
    asrerrors.UsageError: grpc.StatusCode.INVALID_ARGUMENT,
    asrerrors.KeyFileError: grpc.StatusCode.PERMISSION_DENIED,
    asrerrors.NotAuthenticated: grpc.StatusCode.UNAUTHENTICATED,
    asrerrors.AuthError: grpc.StatusCode.PERMISSION_DENIED,
    asrerrors.NotFound: grpc.StatusCode.NOT_FOUND,
    asrerrors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    asrerrors.StateConflict: grpc.StatusCode.FAILED_PRECONDITION,
    asrerrors.ValidationFailed: grpc.StatusCode.FAILED_PRECONDITION,
    asrerrors.Unreachable: grpc.StatusCode.UNAVAILABLE,
    asrerrors.DiskFull: grpc.StatusCode.RESOURCE_EXHAUSTED,
    asrerrors.DataCorrupt: grpc.StatusCode.DATA_LOSS,
    asrerrors.EncryptionKeyError: grpc.StatusCode.PERMISSION_DENIED,
}


def grpc_code(err: AsrError) -> grpc.StatusCode:
    for cls in type(err).__mro__:
        if cls in _GRPC_CODES:
            return _GRPC_CODES[cls]  # type: ignore[index]
    return grpc.StatusCode.INTERNAL


def to_status(err: AsrError) -> status_pb2.Status:
    detail = common_pb2.ErrorDetail(
        code=err.code,
        exit_code=err.exit_code,
        message=err.message,
        possible_causes=list(err.causes),
        recommended_action=err.action,
        details=list(err.details),
    )
    st = status_pb2.Status(code=grpc_code(err).value[0], message=str(err))
    st.details.add().Pack(detail)
    return st


def abort(context: grpc.ServicerContext, err: AsrError) -> None:
    context.abort_with_status(rpc_status.to_status(to_status(err)))


def from_rpc_error(exc: grpc.RpcError, peer: str = "the cloud service") -> AsrError:
    """The typed error a failed call carries, or the closest one for transport failures."""
    call = exc  # grpc.Call and grpc.RpcError are the same object for failed calls
    st = None
    try:
        st = rpc_status.from_call(call)  # type: ignore[arg-type]
    except (ValueError, AttributeError):
        st = None
    if st is not None:
        for any_detail in st.details:
            detail = common_pb2.ErrorDetail()
            if any_detail.Unpack(detail):
                cls = asrerrors.by_code(detail.code)
                return cls(
                    detail.message,
                    causes=list(detail.possible_causes),
                    action=detail.recommended_action,
                    details=list(detail.details),
                )
    code = exc.code() if hasattr(exc, "code") else None
    text = exc.details() if hasattr(exc, "details") else str(exc)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return asrerrors.Unreachable(f"{peer} is unreachable: {text}")
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return asrerrors.NotAuthenticated(f"{peer} refused the caller: {text}")
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return asrerrors.PermissionDenied(f"{peer} refused the call: {text}")
    return AsrError(f"{peer} failed the call ({code}): {text}")
