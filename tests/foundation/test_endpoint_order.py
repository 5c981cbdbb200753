"""The order in which clients try the cloud's endpoints (asrchannel.endpoints), and the files
that carry several endpoints: key files, registration.json, cloudsvc.toml. No processes."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import grpc
import pytest

from asrchannel.endpoints import EndpointOrder, FailoverChannel, check_endpoints
from asrerrors import InvalidConfig
from certs import keyfile
from registration import state
from tests.foundation.test_units import _WRITTEN, _resealed


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_sticks_to_the_first_that_answers_and_moves_on_failure() -> None:
    clock = Clock()
    order = EndpointOrder(["a:1", "b:1", "c:1"], clock)
    assert order.current == "a:1"
    order.succeeded("a:1")
    assert order.current == "a:1" and order.wait() == 0
    assert order.failed("a:1")
    assert order.current == "b:1"
    assert order.wait() == 0          # the round is not over: try b at once
    order.succeeded("b:1")
    assert order.current == "b:1"     # and stay there, even once a is back


def test_a_new_list_keeps_the_current_endpoint_if_listed_and_forgets_old_failures() -> None:
    clock = Clock()
    order = EndpointOrder(["a:1", "b:1"], clock)
    order.failed("a:1")
    order.failed("b:1")                      # a whole round failed: a backoff is due
    assert order.current == "a:1" and order.wait() > 0
    order.replace(["c:1", "a:1"])            # the cloud announced another list
    assert order.current == "a:1" and order.wait() == 0
    order.failed("a:1")
    assert order.current == "c:1"            # wraps round the new list
    order.replace(["d:1"])                   # the current one is gone: start from the first
    assert order.current == "d:1" and order.endpoints == ["d:1"]
    with pytest.raises(ValueError):
        order.replace([])


def test_a_late_failure_of_the_endpoint_left_behind_does_not_move_again() -> None:
    order = EndpointOrder(["a:1", "b:1"], Clock())
    assert order.failed("a:1")
    # a call made on a before the move fails later: b must not be skipped because of it
    assert not order.failed("a:1")
    assert order.current == "b:1"


def test_wraps_round_with_a_doubling_backoff_reset_by_success() -> None:
    clock = Clock()
    order = EndpointOrder(["a:1", "b:1"], clock, backoff_min=0.5, backoff_max=5.0)
    order.failed("a:1")
    assert order.wait() == 0
    order.failed("b:1")               # a whole round failed
    assert order.current == "a:1"
    assert order.wait() == 0.5
    clock.t += 0.5
    assert order.wait() == 0
    waits = []
    for _ in range(8):
        order.failed(order.current)
        assert order.wait() == 0      # within a round the next endpoint is tried at once
        order.failed(order.current)
        waits.append(order.wait())
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0, 5.0]
    order.succeeded(order.current)
    assert order.wait() == 0
    order.failed(order.current)
    order.failed(order.current)
    assert order.wait() == 0.5


def test_failed_says_how_many_failures_in_a_row() -> None:
    order = EndpointOrder(["a:1", "b:1"], Clock())
    assert order.failed("a:1") == 1 and order.failed("b:1") == 2 and order.failed("b:1") == 0


def test_one_endpoint_backs_off_after_each_failure() -> None:
    order = EndpointOrder(["a:1"], Clock())
    order.failed("a:1")
    assert order.current == "a:1" and order.wait() == 0.5


def test_endpoint_lists_are_checked() -> None:
    assert check_endpoints("h:1", "k", "fix") == ["h:1"]
    assert check_endpoints(["h:1", "g:2", "h:1"], "k", "fix") == ["h:1", "g:2"]
    for bad in ([], "", ["h"], ["h:0"], [":1"], [1], None, {"h": 1}):
        with pytest.raises(InvalidConfig) as info:
            check_endpoints(bad, "endpoints.api in F", "Set it right.")
        assert info.value.code == "ASR-0014"
        assert "endpoints.api in F" in info.value.message and info.value.action == "Set it right."


class _Unavailable(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE


class _FakeChannel:
    def __init__(self, name: str, fail: bool) -> None:
        self.name, self.fail, self.closed = name, fail, False

    def unary_unary(self, method: str, **_: Any) -> Any:
        def call(request: Any, **__: Any) -> str:
            if self.fail:
                raise _Unavailable()
            return f"{self.name}{method}"
        return call

    def close(self) -> None:
        self.closed = True


def test_a_failover_channel_follows_the_order() -> None:
    made: dict[str, _FakeChannel] = {}

    def connect(target: str) -> Any:
        made[target] = _FakeChannel(target, fail=target == "a:1")
        return made[target]

    ch = FailoverChannel(EndpointOrder(["a:1", "b:1"], Clock()), connect)
    method = ch.unary_unary("/S/M")            # a stub binds its methods once
    with pytest.raises(grpc.RpcError):
        method(None)
    assert method(None) == "b:1/S/M"           # the same multi-callable, now on b
    ch.close()
    assert all(c.closed for c in made.values())


# ---- the files ----------------------------------------------------------------------------------
def test_a_key_file_with_one_endpoint_is_written_as_before_and_several_as_lists() -> None:
    one = {"api": keyfile.endpoints_entry(["h:1"]), "registration": keyfile.endpoints_entry(["h:2"])}
    assert one == {"api": "h:1", "registration": "h:2"}
    doc = copy.deepcopy(_WRITTEN)
    doc["endpoints"] = {"api": ["h:1", "g:1"], "registration": ["h:2", "g:2"]}
    back = keyfile.parse(keyfile.RegistrationKey(**doc).to_bytes())  # type: ignore[arg-type]
    assert back.api_endpoints == ["h:1", "g:1"] and back.registration_endpoints == ["h:2", "g:2"]
    old = keyfile.parse(keyfile.RegistrationKey(**copy.deepcopy(_WRITTEN)).to_bytes())  # type: ignore[arg-type]
    assert old.api_endpoints == ["127.0.0.1:1"] and old.registration_endpoints == ["127.0.0.1:2"]


@pytest.mark.parametrize("value,words", [([], "at least one"), (["h:1", "h"], "HOST:PORT"), ([7], "HOST:PORT")])
def test_a_key_file_with_a_bad_endpoint_list_names_it(value: object, words: str) -> None:
    from asrerrors import KeyFileUnreadable

    with pytest.raises(KeyFileUnreadable) as info:
        keyfile.parse(_resealed(endpoints__api=value), "k.key")
    assert "field endpoints.api " in info.value.message and words in info.value.message


def _registration(tmp_path: Path, endpoints: object) -> Path:
    doc = {"vault_id": "v", "vault_name": "v", "role": "agent", "name": "h", "identity": "spiffe://x",
           "endpoints": endpoints, "registered_at": 1.0}
    (tmp_path / "registration.json").write_text(json.dumps(doc))
    return tmp_path


def test_an_old_registration_with_single_endpoints_still_loads(tmp_path: Path) -> None:
    ident = state.load(str(_registration(tmp_path, {"api": "h:1", "registration": "h:2"})))
    assert ident.endpoints == {"api": ["h:1"], "registration": ["h:2"]}


@pytest.mark.parametrize("endpoints,key", [
    ({"api": [], "registration": ["h:2"]}, "endpoints.api"),
    ({"api": ["h:1"], "registration": ["nope"]}, "endpoints.registration"),
    ({"api": ["h:1"]}, "endpoints.registration"),
    ("h:1", "endpoints.api"),
])
def test_a_registration_with_a_bad_endpoint_list_names_the_key(tmp_path: Path, endpoints: object,
                                                               key: str) -> None:
    with pytest.raises(InvalidConfig) as info:
        state.load(str(_registration(tmp_path, endpoints)))
    assert f"{key} in {tmp_path}" in info.value.message
    assert "register again" in info.value.action


@pytest.mark.parametrize("line,key", [('endpoints = ["dr1.example"]', "endpoints"),
                                      ('registration_endpoints = "dr1.example:7444"', "registration_endpoints"),
                                      ('endpoints = [7443]', "endpoints")])
def test_a_bad_endpoint_list_in_cloudsvc_toml_names_the_key(tmp_path: Path, line: str, key: str) -> None:
    from cloudsvc import config

    cfg = config.CloudConfig.new(str(tmp_path), endpoints=["dr1.example:7443", "dr2.example:7443"])
    assert cfg.public_endpoints() == {"api": ["dr1.example:7443", "dr2.example:7443"],
                                      "registration": ["127.0.0.1:7444"]}
    assert config.CloudConfig.new(str(tmp_path)).public_endpoints() == {"api": ["127.0.0.1:7443"],
                                                                         "registration": ["127.0.0.1:7444"]}
    text = cfg.to_toml()
    name = line.split(" = ")[0]
    lines = [line if ln.startswith(f"{name} = ") else ln for ln in text.splitlines()]
    (tmp_path / "cloudsvc.toml").write_text("\n".join(lines) + "\n")
    with pytest.raises(InvalidConfig) as info:
        config.load(str(tmp_path))
    assert info.value.code == "ASR-0014"
    assert key in str(info.value) and "HOST:PORT" in str(info.value), str(info.value)


# ---- the heartbeat loop's pace ------------------------------------------------------------------
class _Refusing(_FakeChannel):
    def __init__(self, code: grpc.StatusCode) -> None:
        super().__init__("x", fail=True)
        self.status = code

    def unary_unary(self, method: str, **_: Any) -> Any:
        status = self.status

        class _Error(grpc.RpcError):
            def code(self) -> grpc.StatusCode:
                return status

            def details(self) -> str:
                return "refused here"

        def call(request: Any, **__: Any) -> Any:
            raise _Error()
        return call

    unary_stream = stream_unary = stream_stream = unary_unary


class _Turns:
    """A stand-in for the loop's ``stopping`` event: records each wait, stops after ``n``."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.waits: list[float] = []

    def wait(self, timeout: float) -> bool:
        self.waits.append(timeout)
        return len(self.waits) >= self.n


def _link(tmp_path: Path, code: grpc.StatusCode) -> Any:
    from asrclock import SystemClock
    from registration.link import CloudLink

    for name in ("service_ca.pem", "identity.pem", "identity.key"):
        (tmp_path / name).write_bytes(b"unused: the channels are fakes")
    ident = state.SiteIdentity(state_dir=str(tmp_path), vault_id="v", vault_name="v", role="provider", name="p",
                               identity="spiffe://x", endpoints={"api": ["a:1", "b:1"], "registration": ["a:2"]},
                               registered_at=1.0)
    clock = Clock()
    link = CloudLink(ident, SystemClock(), None, monotonic=clock)
    link.channel._connect = lambda target: _Refusing(code)
    return link


@pytest.mark.parametrize("code,waits,target,state", [
    # regression: the loop waited the order's backoff after any failure, 0 when nothing had
    # moved: a removed server (refused) heartbeated without pause
    (grpc.StatusCode.PERMISSION_DENIED, [2.0, 2.0, 2.0], "a:1", "Refused"),
    # a (fails, b at once), b (fails: the round is over, 0.5 s), a (fails, b at once)
    (grpc.StatusCode.UNAVAILABLE, [0.0, 0.5, 0.0], "b:1", "Unreachable"),
])
def test_the_heartbeat_pace_after_a_failure(tmp_path: Path, code: grpc.StatusCode, waits: list[float],
                                            target: str, state: str) -> None:
    link = _link(tmp_path, code)
    turns = _Turns(3)
    link.run_heartbeats(2.0, turns)  # type: ignore[arg-type]
    assert turns.waits == waits
    assert link.target == target and link.state == state
    status = json.loads((tmp_path / "status.json").read_text())["cloud"]
    assert status["endpoints"] == ["a:1", "b:1"] and status["target"] == "a:1"


def test_init_takes_the_endpoints_of_every_service(tmp_path: Path) -> None:
    from cloudsvc import config
    from tests.harness import BIN, run

    res = run([str(BIN / "asr-cloudsvc"), "init", "--data-dir", str(tmp_path / "a"), "--listen", "0.0.0.0:7443",
               "--endpoint", "dr1.example:7443", "--endpoint", "dr2.example:8443", "--json"])
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["endpoints"] == {"api": ["dr1.example:7443", "dr2.example:8443"],
                                                   "registration": ["dr1.example:7444", "dr2.example:8444"]}
    cfg = config.load(str(tmp_path / "a"))
    assert cfg.endpoints == ["dr1.example:7443", "dr2.example:8443"]
    assert {"dr1.example", "dr2.example"} <= set(cfg.names)      # the certificate answers to both
    # and the operator credential names them too: asr uses the first that answers
    cred = json.loads((tmp_path / "a" / "operator.json").read_text())
    assert cred["endpoint"] == "dr1.example:7443,dr2.example:8443"
    res = run([str(BIN / "asr-cloudsvc"), "init", "--data-dir", str(tmp_path / "b"), "--endpoint", "dr1:7443",
               "--registration-endpoint", "dr1:7444", "--registration-endpoint", "dr2:7444"])
    assert res.returncode == 2 and "ASR-0002" in res.stderr and "--registration-endpoint" in res.stderr
    assert not (tmp_path / "b" / "cloudsvc.toml").exists()
