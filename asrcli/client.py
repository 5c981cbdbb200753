"""The operator's connection to the cloud: credentials, channel, typed errors."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from asrchannel.endpoints import check_endpoints, wait_connected
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
        raw = endpoint or os.environ.get("ASR_ENDPOINT") or cred["endpoint"]
        # several: "HOST:PORT,HOST:PORT" (--endpoint, ASR_ENDPOINT) or a list (the credential)
        endpoints = check_endpoints(raw.split(",") if isinstance(raw, str) else raw, "the cloud endpoint",
                                    'Give "HOST:PORT" or several as "HOST:PORT,HOST:PORT" (--endpoint, ASR_ENDPOINT '
                                    "or the credential's endpoint).", UsageError)
        self.endpoint = _first_ready(endpoints, lambda t: client_channel(t, ca, cert, key))
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


READY_WAIT_S = 3.0


def _first_ready(endpoints: list[str], connect: Callable[[str], grpc.Channel]) -> str:
    """The first endpoint that accepts a connection within READY_WAIT_S, in the given order
    (the first when none does: its calls then say it is unreachable). A command is one short
    session, so it picks once rather than moving mid-command: a call that failed is never
    repeated elsewhere (it may have run)."""
    if len(endpoints) == 1:
        return endpoints[0]
    for target in endpoints:
        channel = connect(target)
        try:
            if wait_connected(channel, READY_WAIT_S) == grpc.ChannelConnectivity.READY:
                return target
        finally:
            channel.close()
    return endpoints[0]
