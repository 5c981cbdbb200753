"""The operator's connection to the cloud: credentials, channel, typed errors."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from asrchannel.status import from_rpc_error
from asrchannel.tls import client_channel
from asrerrors import NotAuthenticated, UsageError
from asrpb import operator_pb2_grpc

T = TypeVar("T")


class Client:
    def __init__(self, endpoint: str | None, credentials: str | None, timeout: float = 60.0) -> None:
        cred_path = credentials or os.environ.get("ASR_CREDENTIALS")
        if not cred_path:
            raise UsageError(
                "no operator credentials given",
                action="Pass --credentials FILE or set ASR_CREDENTIALS (asr-cloudsvc init wrote "
                "DATA_DIR/operator.json).",
            )
        try:
            with open(cred_path) as f:
                cred = json.load(f)
            ca, cert, key = (cred[k].encode() for k in ("service_ca_pem", "cert_pem", "key_pem"))
        except (OSError, ValueError, KeyError) as exc:
            raise NotAuthenticated(
                f"cannot read operator credentials {cred_path}: {exc}",
                action="Point --credentials at the operator.json written by 'asr-cloudsvc init'.",
            ) from exc
        self.endpoint = endpoint or os.environ.get("ASR_ENDPOINT") or cred["endpoint"]
        self.timeout = timeout
        self.channel = client_channel(self.endpoint, ca, cert, key)
        self.operator = operator_pb2_grpc.OperatorStub(self.channel)
        self.protection = operator_pb2_grpc.ProtectionStub(self.channel)

    def call(self, fn: Callable[..., T], request: Any, timeout: float | None = None) -> T:
        try:
            return fn(request, timeout=timeout or self.timeout)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, f"the cloud service at {self.endpoint}") from exc

    def close(self) -> None:
        self.channel.close()
