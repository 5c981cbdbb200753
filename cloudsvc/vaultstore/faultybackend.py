"""A fault-injecting wrapper around any backend, for crash-safety and concurrency tests
(kopia's faulty storage, in our terms).

In-process::

    faulty = FaultyBackend(inner)
    fault = faulty.add_fault("put").error_instead(OSError(errno.ENOSPC, "No space")).repeat(2)
    gate = faulty.add_fault("get", prefix="packs/").skip(3).pause()
    ...                                    # run the operation on another thread
    assert gate.wait_fired(10)             # the 4th get is now blocked inside the backend
    ...                                    # do things while it waits
    gate.release()                         # the paused call continues
    assert fault.count == 2 and faulty.calls["put"] == 5

A fault applies to calls of one method (and, with ``prefix``, only to names starting with
it). It lets ``skip`` matching calls through, then acts on the next ``times`` (default 1):

* ``error_instead(exc)``: raise ``exc`` instead of making the call (default
  ``StorageError("injected … failure")``);
* ``error_after(exc)``: make the call, then raise (the write happened; the caller never
  learned it: a crash between a durable put and the next step);
* ``pause()``: block until :meth:`Fault.release` (or the release file exists), then make the
  call. ``fired`` is set when a call starts waiting, so a test knows where the other thread is.

``fired`` (an Event) and ``count`` say whether and how often a fault acted; ``calls`` counts
every call per method, so a test can first count the steps of an operation and then fail
each one in turn. Several faults may be armed per method: the first that applies acts.

Across processes (a cloud service run as a subprocess): the environment variable
``ASR_FAULTS`` names a JSON file, a list of faults, and :func:`faults_from_environment`
wraps the store's backend with them (the backend is returned unchanged when the variable is
unset or empty)::

    [{"method": "get", "action": "pause", "after": 3,
      "fired_file": "/tmp/x/fired", "release_file": "/tmp/x/release"},
     {"method": "put", "action": "error", "errno": 28, "times": 1}]

Keys: ``method`` (put, get, list, delete, stat, exists; required); ``action`` (``error``,
the default, ``error_after`` or ``pause``); ``after`` (matching calls let through first,
default 0); ``times`` (calls acted on, default 1); ``prefix`` (only names starting with it);
``errno`` (raise ``OSError(errno)``, which the store reports as its error, ENOSPC as
``DiskFull``) or ``message`` (raise ``StorageError(message)``); ``fired_file`` (written, as
JSON ``{"method", "name", "count"}``, each time the fault acts; a pause writes it when it
starts waiting); ``release_file`` (a pause continues once this file exists; polled every
20 ms); ``timeout`` (seconds a pause waits before failing the call, default 300).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from asrerrors import InvalidConfig, StorageError
from asrops.environment import test_hook
from cloudsvc.vaultstore.backend import Backend, ObjectInfo
from durablefile import write_atomic

METHODS = ("put", "get", "list", "delete", "stat", "exists")
ACTIONS = ("error", "error_after", "pause")
ENV = "ASR_FAULTS"
_POLL_S = 0.02
T = TypeVar("T")


class Fault:
    """One armed fault; build it with the chained methods (each returns the fault)."""

    def __init__(self, method: str, prefix: str = "") -> None:
        if method not in METHODS:
            raise ValueError(f"unknown backend method {method!r}")
        self.method = method
        self.prefix = prefix
        self.action = "error"
        self.exc: BaseException | None = None
        self.skip_calls = 0
        self.times = 1
        self.pause_timeout_s = 300.0
        self.fired_file: str | None = None
        self.release_file: str | None = None
        self.fired = threading.Event()  # set when the fault first acts (a pause: when it waits)
        self.count = 0  # times it acted
        self._seen = 0
        self._released = threading.Event()

    # --- building ------------------------------------------------------------------------
    def error_instead(self, exc: BaseException | None = None) -> Fault:
        self.action, self.exc = "error", exc
        return self

    def error_after(self, exc: BaseException | None = None) -> Fault:
        self.action, self.exc = "error_after", exc
        return self

    def pause(self, timeout_s: float = 300.0) -> Fault:
        self.action, self.pause_timeout_s = "pause", timeout_s
        return self

    def skip(self, calls: int) -> Fault:
        self.skip_calls = calls
        return self

    def repeat(self, times: int) -> Fault:
        if times < 1:
            raise ValueError("a fault acts at least once")
        self.times = times
        return self

    # --- observing and releasing ---------------------------------------------------------
    def wait_fired(self, timeout_s: float) -> bool:
        """Wait until the fault has acted (a pause: until a call waits in it)."""
        return self.fired.wait(timeout_s)

    def release(self) -> None:
        """Let paused calls (and any later ones this fault would pause) continue."""
        self._released.set()

    @property
    def exhausted(self) -> bool:
        return self.count >= self.times

    # --- acting (FaultyBackend) ----------------------------------------------------------
    def _claims(self, name: str) -> bool:
        """Whether this call is one the fault acts on (the caller holds the backend's lock)."""
        if not name.startswith(self.prefix) or self.exhausted:
            return False
        self._seen += 1
        if self._seen <= self.skip_calls:
            return False
        self.count += 1
        return True

    def _fire(self, name: str) -> None:
        if self.fired_file:
            doc = {"method": self.method, "name": name, "count": self.count}
            write_atomic(self.fired_file, json.dumps(doc).encode())
        self.fired.set()

    def _error(self) -> BaseException:
        return self.exc if self.exc is not None else StorageError(f"injected {self.method} failure")

    def _wait_for_release(self) -> None:
        deadline = time.monotonic() + self.pause_timeout_s
        while not self._released.wait(_POLL_S if self.release_file else max(0.0, deadline - time.monotonic())):
            if self.release_file and os.path.exists(self.release_file):
                return
            if time.monotonic() >= deadline:
                raise StorageError(f"injected pause of {self.method} was not released within "
                                   f"{self.pause_timeout_s:g} s")

    def apply(self, name: str, call: Callable[[], T]) -> T:
        if self.action == "error":
            self._fire(name)
            raise self._error()
        if self.action == "pause":
            self._fire(name)
            self._wait_for_release()
            return call()
        call()  # error_after: the call takes effect, its caller never learns it
        self._fire(name)
        raise self._error()

    def __repr__(self) -> str:
        return f"Fault({self.method!r}, {self.action}, skip={self.skip_calls}, times={self.times}, count={self.count})"


class FaultyBackend:
    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()
        self.faults: list[Fault] = []
        self._lock = threading.Lock()

    def add_fault(self, method: str, prefix: str = "") -> Fault:
        """Arm a fault on ``method`` (an error instead of the call, until changed)."""
        fault = Fault(method, prefix)
        with self._lock:
            self.faults.append(fault)
        return fault

    def fail(
        self,
        method: str,
        times: int = 1,
        exc: BaseException | None = None,
        skip: int = 0,
        after: bool = False,
    ) -> FaultyBackend:
        """Shorthand: replace the faults on ``method`` with one that raises on the
        ``skip + 1``-th call and the ``times - 1`` after it; ``after``: once the call took effect."""
        with self._lock:
            self.faults = [f for f in self.faults if f.method != method]
        fault = self.add_fault(method).skip(skip).repeat(times)
        if after:
            fault.error_after(exc)
        else:
            fault.error_instead(exc)
        return self

    def clear(self) -> None:
        """Disarm every fault, releasing any paused call."""
        with self._lock:
            faults, self.faults = self.faults, []
        for fault in faults:
            fault.release()

    def _call(self, method: str, name: str, call: Callable[[], T]) -> T:
        with self._lock:
            self.calls[method] += 1
            fault = next((f for f in self.faults if f.method == method and f._claims(name)), None)
        if fault is None:
            return call()
        return fault.apply(name, call)

    def put(self, name: str, data: bytes | memoryview) -> None:
        self._call("put", name, lambda: self.inner.put(name, data))

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        return self._call("get", name, lambda: self.inner.get(name, offset, length))

    def list(self, prefix: str = "") -> Iterator[str]:
        return self._call("list", prefix, lambda: self.inner.list(prefix))

    def delete(self, name: str) -> None:
        self._call("delete", name, lambda: self.inner.delete(name))

    def stat(self, name: str) -> ObjectInfo:
        return self._call("stat", name, lambda: self.inner.stat(name))

    def exists(self, name: str) -> bool:
        return self._call("exists", name, lambda: self.inner.exists(name))

    def __repr__(self) -> str:
        return f"FaultyBackend({self.inner!r}, faults={self.faults!r})"


def _spec_error(path: str, what: str) -> InvalidConfig:
    return InvalidConfig(f"fault spec {path} ({ENV}): {what}",
                         action="Fix the fault spec file; its format is in cloudsvc/vaultstore/faultybackend.py.")


def _fault_from_spec(path: str, n: int, spec: Any) -> Fault:
    if not isinstance(spec, dict):
        raise _spec_error(path, f"entry {n} is not an object")
    known = {"method", "action", "after", "times", "prefix", "errno", "message", "fired_file",
             "release_file", "timeout"}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise _spec_error(path, f"entry {n} has unknown keys {unknown}")
    method, action = spec.get("method"), spec.get("action", "error")
    if method not in METHODS:
        raise _spec_error(path, f"entry {n}: method must be one of {', '.join(METHODS)}")
    if action not in ACTIONS:
        raise _spec_error(path, f"entry {n}: action must be one of {', '.join(ACTIONS)}")
    try:
        fault = Fault(method, str(spec.get("prefix", ""))).skip(int(spec.get("after", 0)))
        fault.repeat(int(spec.get("times", 1)))
        timeout = float(spec.get("timeout", 300.0))
    except (TypeError, ValueError) as bad:
        raise _spec_error(path, f"entry {n}: {bad}") from bad
    error: BaseException | None = None
    if "errno" in spec:
        code = int(spec["errno"])
        error = OSError(code, os.strerror(code))
    elif "message" in spec:
        error = StorageError(str(spec["message"]))
    if action == "pause":
        fault.pause(timeout)
    elif action == "error_after":
        fault.error_after(error)
    else:
        fault.error_instead(error)
    fault.fired_file = spec.get("fired_file")
    fault.release_file = spec.get("release_file")
    return fault


def faults_from_environment(backend: Backend, environ: Mapping[str, str] | None = None) -> Backend:
    """``backend`` wrapped with the faults of the spec file ``$ASR_FAULTS`` names (see the
    module doc); ``backend`` itself when the variable is unset or empty, or when test mode
    (``ASR_TEST_MODE=1``, ``asrops.environment``) is off: a test hook only."""
    path = test_hook(ENV, environ)
    if not path:
        return backend
    try:
        specs = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise _spec_error(path, f"cannot be read as JSON: {exc}") from exc
    if not isinstance(specs, list):
        raise _spec_error(path, "must be a JSON list of faults")
    faulty = FaultyBackend(backend)
    for n, spec in enumerate(specs):
        fault = _fault_from_spec(path, n, spec)
        faulty.faults.append(fault)
    return faulty
