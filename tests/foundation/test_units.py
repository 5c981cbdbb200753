"""Unit tests of the foundation's pure pieces: error tree, key file, proxy URLs, networks."""

from __future__ import annotations

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


def _key() -> keyfile.RegistrationKey:
    return keyfile.RegistrationKey(
        vault_id="abc", vault_name="v", region="japaneast",
        endpoints={"api": "127.0.0.1:1", "registration": "127.0.0.1:2"},
        service_ca_pem="-----BEGIN CERTIFICATE-----\nx\n", vault_ca_pem="y",
        secret=keyfile.new_secret(), issued_at=1000.0, expires_at=1000.0 + 5 * 86400,
    )


def test_key_file_round_trip_and_expiry() -> None:
    k = _key()
    back = keyfile.parse(k.to_bytes())
    assert back == k
    back.check_valid(1000.0 + 5 * 86400 - 1)
    with pytest.raises(KeyFileExpired):
        back.check_valid(1000.0 + 5 * 86400)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_damage_to_a_key_file_is_detected(data: st.DataObject) -> None:
    raw = bytearray(_key().to_bytes())
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
    # content is exactly the original.
    assert json.loads(parsed.to_bytes()) == json.loads(_key_like(parsed).to_bytes())


def _key_like(k: keyfile.RegistrationKey) -> keyfile.RegistrationKey:
    return keyfile.parse(k.to_bytes())


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
    from certs.pki import create_ca
    from cloudsvc.schema import MIGRATIONS
    from cloudsvc.vaults import Vaults
    from sqlitestore.database import Database

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
    # schema version recorded
    assert db.schema_version() >= 1
