"""Unit tests of the foundation's pure pieces: error tree, key file, proxy URLs, networks."""

from __future__ import annotations

import copy
import hashlib
import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import asrerrors
from asrchannel.proxy import parse_proxy
from asrchannel.status import to_status
from asrclock import FakeClock
from asrerrors import InvalidNetwork, InvalidProxy, KeyFileExpired, KeyFileUnreadable
from certs import keyfile
from certs.pki import create_ca


def test_error_codes_are_unique_and_documented() -> None:
    classes = asrerrors.all_errors()
    codes = [c.code for c in classes]
    exits = [c.exit_code for c in classes]
    assert len(set(codes)) == len(codes)
    assert len(set(exits)) == len(exits)
    doc = asrerrors.__doc__ or ""
    for cls in classes:
        assert re.search(rf"{cls.__name__}\s+{cls.code} \({cls.exit_code}\)", doc), cls


def test_error_survives_the_wire() -> None:
    from asrpb import common_pb2

    err = asrerrors.KeyFileSuperseded("old key", details=["a", "b"])
    st_ = to_status(err)
    detail = common_pb2.ErrorDetail()
    assert st_.details[0].Unpack(detail)
    back = asrerrors.by_code(detail.code)(detail.message, causes=detail.possible_causes,
                                          action=detail.recommended_action, details=detail.details)
    assert type(back) is asrerrors.KeyFileSuperseded
    assert back.to_dict() == err.to_dict()


_CA_PEM = create_ca("unit test service CA").cert_pem.decode()
_VAULT_CA_PEM = create_ca("unit test vault CA").cert_pem.decode()
_SECRET = "q" * 43  # base64url of 32 bytes, fixed so that every parse can be compared with it
_WRITTEN = {
    "vault_id": "abc", "vault_name": "v", "region": "japaneast",
    "endpoints": {"api": "127.0.0.1:1", "registration": "127.0.0.1:2"},
    "service_ca_pem": _CA_PEM, "vault_ca_pem": _VAULT_CA_PEM,
    "secret": _SECRET, "issued_at": 1000.0, "expires_at": 1000.0 + 5 * 86400,
}


def _key() -> keyfile.RegistrationKey:
    return keyfile.RegistrationKey(**copy.deepcopy(_WRITTEN))  # type: ignore[arg-type]


def test_key_file_round_trip_and_expiry() -> None:
    raw = _key().to_bytes()
    back = keyfile.parse(raw)
    # every field equals what was written, independently of the code that wrote it
    for name, value in _WRITTEN.items():
        assert getattr(back, name) == value, name
    assert (back.format, back.version) == ("asr-registration-key", 1)
    body = {k: v for k, v in json.loads(raw).items() if k != "checksum"}
    assert back.checksum == hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    back.check_valid(1000.0 + 5 * 86400 - 1)
    with pytest.raises(KeyFileExpired):
        back.check_valid(1000.0 + 5 * 86400)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_damage_to_a_key_file_is_detected(data: st.DataObject) -> None:
    original = _key().to_bytes()
    raw = bytearray(original)
    doc_len = len(raw)
    if data.draw(st.booleans()):
        cut = data.draw(st.integers(0, doc_len - 2))
        damaged = bytes(raw[:cut])
    else:
        i = data.draw(st.integers(0, doc_len - 1))
        b = data.draw(st.integers(0, 255).filter(lambda v: v != raw[i]))
        raw[i] = b
        damaged = bytes(raw)
    try:
        parsed = keyfile.parse(damaged)
    except KeyFileUnreadable:
        return
    # Only changes JSON does not see (whitespace between tokens) may pass, and then the
    # content is exactly what was written.
    assert json.loads(damaged) == json.loads(original)
    for name, value in _WRITTEN.items():
        assert getattr(parsed, name) == value, name


def _resealed(**change: object) -> bytes:
    """A key file with ``change`` applied (dotted names reach into endpoints) and the
    checksum recomputed, so only the field checks can refuse it."""
    doc = json.loads(_key().to_bytes())
    for dotted, value in change.items():
        *outer, last = dotted.split("__")
        target = doc
        for part in outer:
            target = target[part]
        if value is _DROP:
            del target[last]
        else:
            target[last] = value
    doc.pop("checksum")
    doc["checksum"] = hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return json.dumps(doc).encode()


_DROP = object()


@pytest.mark.parametrize("change,field", [
    ({"endpoints__registration": 7443}, "endpoints.registration"),
    ({"endpoints__registration": "127.0.0.1"}, "endpoints.registration"),
    ({"endpoints__registration": "127.0.0.1:0"}, "endpoints.registration"),
    ({"endpoints__api": ["127.0.0.1", 1]}, "endpoints.api"),
    ({"endpoints__api": ":7443"}, "endpoints.api"),
    ({"endpoints__extra": "h:1"}, "endpoints"),
    ({"endpoints__api": _DROP}, "endpoints"),
    ({"endpoints": "127.0.0.1:1"}, "endpoints"),
    ({"vault_id": 12}, "vault_id"),
    ({"vault_id": ""}, "vault_id"),
    ({"vault_name": None}, "vault_name"),
    ({"region": {"name": "x"}}, "region"),
    ({"service_ca_pem": "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n"}, "service_ca_pem"),
    ({"vault_ca_pem": 5}, "vault_ca_pem"),
    ({"secret": 123}, "secret"),
    ({"secret": "q" * 42}, "secret"),
    ({"secret": "not base64!"}, "secret"),
    ({"issued_at": "yesterday"}, "issued_at"),
    ({"issued_at": True}, "issued_at"),
    ({"expires_at": None}, "expires_at"),
    ({"expires_at": 999.0}, "expires_at"),
])
def test_a_resealed_key_with_a_wrong_field_names_it(change: dict[str, object], field: str) -> None:
    with pytest.raises(KeyFileUnreadable) as info:
        keyfile.parse(_resealed(**change), "k.key")
    assert f"field {field} " in str(info.value), str(info.value)
    assert info.value.code == "ASR-0021"


@pytest.mark.parametrize("doc,words", [
    ({"version": "1"}, "version '1'"),
    ({"version": 2}, "version 2"),
    ({"surprise": 1}, "unknown: surprise"),
    ({"secret": _DROP}, "missing: secret"),
    ({"checksum": 7}, "checksum"),
])
def test_structure_errors_are_named(doc: dict[str, object], words: str) -> None:
    raw = json.loads(_key().to_bytes())
    for k, v in doc.items():
        if v is _DROP:
            del raw[k]
        else:
            raw[k] = v
    with pytest.raises(KeyFileUnreadable) as info:
        keyfile.parse(json.dumps(raw).encode(), "k.key")
    assert words in str(info.value), str(info.value)


@pytest.mark.parametrize("url,host,port,user", [
    ("http://127.0.0.1:3128", "127.0.0.1", 3128, None),
    ("http://u:p%40ss@proxy.local:8080", "proxy.local", 8080, "u"),
    ("http://[::1]:3128", "::1", 3128, None),
])
def test_proxy_urls_accepted(url: str, host: str, port: int, user: str | None) -> None:
    p = parse_proxy(url)
    assert (p.host, p.port, p.user) == (host, port, user)
    assert "p@ss" not in p.redacted


@pytest.mark.parametrize("url", ["127.0.0.1:3128", "socks5://h:1", "https://h:1", "http://h",
                                 "http://h:0x10", "http://u@h:1", "http://h:1/path", "", "http://:1"])
def test_proxy_urls_refused(url: str) -> None:
    with pytest.raises(InvalidProxy):
        parse_proxy(url)


def test_network_validation(tmp_path: object) -> None:
    from cloudsvc.schema import MIGRATIONS
    from cloudsvc.vaults import Vaults
    from metastore.database import Database

    db = Database(str(tmp_path) + "/m.db", MIGRATIONS)  # type: ignore[operator]
    vaults = Vaults(db, create_ca("t"), FakeClock(), str(tmp_path))
    vaults.create("v", "japaneast")
    ok = vaults.create_network("v", "n1", "japaneast", "10.0.0.0/16", [("a", "10.0.1.0/24"), ("b", "10.0.2.0/24")])
    assert ok["address_space"] == "10.0.0.0/16"
    bad = [
        ("10.0.0.0/33", []), ("10.0.0.1/16", []), ("10.0.0.0/16", [("a", "10.1.0.0/24")]),
        ("10.0.0.0/16", [("a", "10.0.1.0/24"), ("b", "10.0.1.128/25")]),
        ("10.0.0.0/16", [("a", "10.0.1.0/24"), ("a", "10.0.2.0/24")]),
    ]
    for i, (space, subnets) in enumerate(bad):
        with pytest.raises(InvalidNetwork):
            vaults.create_network("v", f"bad{i}", "japaneast", space, subnets)
    assert [r["name"] for r in vaults.list_networks("v")] == ["n1"]
    # every migration applied, and recorded
    assert db.schema_version() == len(MIGRATIONS)
