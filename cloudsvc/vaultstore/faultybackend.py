"""A fault-injecting wrapper around any backend, for crash-safety tests.

``FaultyBackend(inner).fail("put", times=1, skip=2)`` makes the third ``put`` raise
(:class:`StorageError` unless ``exc`` is given). With ``after=True`` the inner call is made
first and the error raised afterwards: the write happened but the caller never learned it
(a crash between a durable put and the next step). ``calls`` counts every call per method, so
a test can first count the steps of an operation and then fail each one in turn.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from asrerrors import StorageError
from cloudsvc.vaultstore.backend import Backend, ObjectInfo

_METHODS = ("put", "get", "list", "delete", "stat", "exists")


@dataclass
class _Fault:
    skip: int
    times: int
    exc: BaseException | None
    after: bool


class FaultyBackend:
    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()
        self._faults: dict[str, _Fault] = {}

    def fail(
        self,
        method: str,
        times: int = 1,
        exc: BaseException | None = None,
        skip: int = 0,
        after: bool = False,
    ) -> FaultyBackend:
        if method not in _METHODS:
            raise ValueError(f"unknown backend method {method!r}")
        self._faults[method] = _Fault(skip, times, exc, after)
        return self

    def clear(self) -> None:
        self._faults.clear()

    def _should_fail(self, method: str) -> _Fault | None:
        self.calls[method] += 1
        fault = self._faults.get(method)
        if fault is None or fault.times <= 0:
            return None
        if fault.skip > 0:
            fault.skip -= 1
            return None
        fault.times -= 1
        return fault

    @staticmethod
    def _raise(fault: _Fault, method: str) -> None:
        raise fault.exc if fault.exc is not None else StorageError(f"injected {method} failure")

    def put(self, name: str, data: bytes | memoryview) -> None:
        fault = self._should_fail("put")
        if fault and not fault.after:
            self._raise(fault, "put")
        self.inner.put(name, data)
        if fault:
            self._raise(fault, "put")

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        fault = self._should_fail("get")
        if fault and not fault.after:
            self._raise(fault, "get")
        data = self.inner.get(name, offset, length)
        if fault:
            self._raise(fault, "get")
        return data

    def list(self, prefix: str = "") -> Iterator[str]:
        fault = self._should_fail("list")
        if fault:
            self._raise(fault, "list")
        return self.inner.list(prefix)

    def delete(self, name: str) -> None:
        fault = self._should_fail("delete")
        if fault and not fault.after:
            self._raise(fault, "delete")
        self.inner.delete(name)
        if fault:
            self._raise(fault, "delete")

    def stat(self, name: str) -> ObjectInfo:
        fault = self._should_fail("stat")
        if fault:
            self._raise(fault, "stat")
        return self.inner.stat(name)

    def exists(self, name: str) -> bool:
        fault = self._should_fail("exists")
        if fault:
            self._raise(fault, "exists")
        return self.inner.exists(name)
