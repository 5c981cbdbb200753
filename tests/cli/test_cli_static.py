"""The operator tool without a cloud service: version, help, completion, schemas, the JSON
rules of wire messages, a reader that goes away, option names (issue 12's CLI defects)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from asrcli.local_cmds import schema_name, schema_names
from asrcli.main import parser
from asrcli.output import human_bytes, is_time_field, to_doc
from asrpb import failover_pb2, operator_pb2, replication_pb2
from registration.status_cmd import add_status_command
from tests.cli_schema import SCHEMAS, check, check_error, validator
from tests.harness import BIN, base_env


def leaves(p: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield p
    for a in subs:
        for child in dict.fromkeys(a.choices.values()):
            yield from leaves(child)


def asr(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "asr"), *args], capture_output=True, text=True, env=base_env(), timeout=60,
                          check=False)


def test_version() -> None:
    res = asr("--version")
    assert res.returncode == 0 and res.stdout.startswith("asr ") and res.stdout.split()[1][0].isdigit(), res


def test_every_option_and_argument_has_help() -> None:
    status = argparse.ArgumentParser(prog="asr-agent")
    add_status_command(status.add_subparsers(dest="cmd"), "agent", lambda p: p)
    missing = []
    for leaf in [*leaves(parser()), *leaves(status)]:
        for action in leaf._actions:
            if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
                continue   # hidden aliases are hidden on purpose
            if not action.help:
                missing.append(f"{leaf.prog}: {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


def test_every_command_has_one_schema_and_every_schema_a_command() -> None:
    commands = {leaf.get_default("command") for leaf in leaves(parser())}
    names = {schema_name(c) for c in commands} | {"asr-provider-status.json", "asr-agent-status.json",
                                                  "defs.json", "error.json"}
    assert names == set(schema_names())
    for name in sorted(names):
        validator(name)   # each is a valid Draft 2020-12 schema whose references resolve


def test_schema_command_prints_a_commands_schema() -> None:
    res = asr("schema", "point", "list")
    assert res.returncode == 0
    assert json.loads(res.stdout) == json.loads((SCHEMAS / "point-list.json").read_text())
    listed = asr("schema", "--json")
    assert "point-list" in check("schema", json.loads(listed.stdout))
    missing = asr("schema", "no", "such", "--json")
    assert missing.returncode == 40 and check_error(json.loads(missing.stdout))["error"]["code"] == "ASR-0040"


# ---- the JSON rules ----------------------------------------------------------------------------
def _reachable(d: Descriptor | None, seen: dict[str, Descriptor]) -> None:
    if d is None or d.full_name in seen:
        return
    seen[d.full_name] = d
    for f in d.fields:
        if f.type == FieldDescriptor.TYPE_MESSAGE:
            _reachable(f.message_type, seen)


def operator_messages() -> dict[str, Descriptor]:
    """Every message an operator RPC answers with, and those inside them."""
    seen: dict[str, Descriptor] = {}
    for mod, services in ((operator_pb2, ("Operator", "Protection", "Billing")), (replication_pb2, ("Points",)),
                          (failover_pb2, ("Failover",))):
        for svc in services:
            for m in mod.DESCRIPTOR.services_by_name[svc].methods:
                _reachable(m.output_type, seen)
    return seen


# Every double an operator sees, classified: times (seconds since the epoch on the wire, RFC
# 3339 strings in JSON) by the naming rule of asrcli.output, and the rest. A new double field
# must be added to one of the two lists, so a time never slips out as a bare number.
TIMES = {
    "Vault.created_at", "Vault.key_expires_at", "Server.registered_at", "Server.last_heartbeat",
    "VmStatus.last_replication", "RecoveredVm.created_at", "JobTask.started_at", "JobTask.ended_at",
    "Job.created_at", "Job.started_at", "Job.ended_at", "Event.at", "RecoveryPoint.created_at",
    "Plan.created_at", "Vm.last_seen", "KeyFile.expires_at", "VmStatus.last_replica_report_at",
    "NetworkMapping.created_at", "VmStatus.reverse_synced_at",
}
NOT_TIMES = {
    "VmStatus.rpo_seconds", "VmStatus.initial_replication_progress", "Job.progress",
    "BillingLine.protected_days", "BillingReport.average_protected_vms", "BillingReport.unit_price",
    "BillingReport.protection_charge", "BillingReport.included_gb", "BillingReport.excess_gb",
    "BillingReport.price_per_excess_gb", "BillingReport.storage_charge", "BillingReport.total",
    "PlanAction.timeout_seconds",
}


def test_every_double_an_operator_sees_is_classified_and_times_follow_the_rule() -> None:
    doubles = {f"{d.name}.{f.name}": f for d in operator_messages().values() for f in d.fields
               if f.type == FieldDescriptor.TYPE_DOUBLE}
    unclassified = set(doubles) - TIMES - NOT_TIMES
    assert unclassified == set(), "classify these doubles in TIMES or NOT_TIMES (and name times *_at/last_*)"
    assert {k for k, f in doubles.items() if is_time_field(f)} == TIMES & set(doubles)


def test_to_doc_numbers_times_and_every_field() -> None:
    job = operator_pb2.Job(id="j1", created_at=1_780_000_000.25, bytes_done=5_000_000_000, bytes_total=1 << 40)
    doc = to_doc(job)
    assert doc["bytes_done"] == 5_000_000_000 and doc["bytes_total"] == 1 << 40    # numbers, not "5000000000"
    assert doc["created_at"] == "2026-05-28T20:26:40.250000Z"
    assert doc["ended_at"] is None and doc["tasks"] == [] and doc["error"]["code"] == ""
    check("job show", doc)
    point = replication_pb2.RecoveryPoint(point_id="rp", created_at=1.5, uploaded_bytes=3, changed_blocks=2)
    check("point list", [to_doc(point)])
    with pytest.raises(Exception, match="is not of type 'integer'"):
        check("point list", [{**to_doc(point), "uploaded_bytes": "3"}])   # the old int64-as-string shape
    with pytest.raises(Exception, match="is not of type 'array'"):
        check("point list", {"vm_id": "x", "points": [to_doc(point)]})      # the old point list shape
    with pytest.raises(Exception, match="1.5 is not valid"):
        check("point list", [{**to_doc(point), "created_at": 1.5}])          # the old epoch-float time


def test_cloud_protect_compression_option_and_the_policy_it_shows(capsys: pytest.CaptureFixture[str]) -> None:
    from asrcli.protection_cmds import policy_text, print_vm

    ns = parser().parse_args(["cloud", "protect", "gold", "--storage", "s"])
    assert ns.compression == "balanced"
    assert parser().parse_args(["cloud", "protect", "gold", "--target-cloud", "silver", "--compression",
                                "strong"]).compression == "strong"
    helps = asr("cloud", "protect", "--help").stdout
    for words in ("fast|balanced|strong", "least CPU", "level -1 per 64 KiB", "32 new blocks", "zstd level 2",
                  "14%", "encrypted VM's blocks are compressed one at a time under both", "64 blocks",
                  "zstd level 3", "6%", "1.5x"):
        assert words in " ".join(helps.split()), words
    # the JSON of a shown policy carries it (and an unprotected VM's empty policy still passes)
    status = operator_pb2.VmStatus(protection_state="Protected")
    status.policy.storage, status.policy.compression = "s", "strong"
    doc = check("vm show", to_doc(status))
    assert doc["policy"]["compression"] == "strong"
    check("vm show", to_doc(operator_pb2.VmStatus(protection_state="Unprotected")))
    with pytest.raises(Exception, match="is not one of"):
        check("vm show", {**doc, "policy": {**doc["policy"], "compression": "turbo"}})
    assert policy_text(doc["policy"]).endswith("compression strong")
    assert policy_text({**doc["policy"], "compression": ""}).endswith("compression balanced")
    print_vm(doc)
    assert "compression strong" in capsys.readouterr().out


def test_human_units() -> None:
    assert [human_bytes(n) for n in (0, 512, 1536, 40 << 30, 5 * (1 << 40))] == [
        "0 B", "512 B", "1.5 KiB", "40 GiB", "5 TiB"]
    assert human_bytes(int(1.234 * (1 << 20))) == "1.23 MiB"


# ---- the pipe, the key file option, completion ------------------------------------------------
@pytest.mark.parametrize("argv", [["schema"], ["completion", "bash"], ["--help"]])
def test_a_reader_that_goes_away_is_no_traceback(argv: list[str]) -> None:
    """`asr ... | head`: the reader closes the pipe; asr stops quietly with 141 (128 + SIGPIPE)."""
    r, w = os.pipe()
    os.close(r)   # the reader is gone before asr writes anything
    try:
        res = subprocess.run([str(BIN / "asr"), *argv], stdout=w, stderr=subprocess.PIPE, text=True,
                             env=base_env(), timeout=60, check=False)
    finally:
        os.close(w)
    # argparse itself ignores a failed write of --help (and exits 0); everything else is ours: 141
    assert (res.returncode, res.stderr) == (0 if argv == ["--help"] else 141, ""), res.stderr


def test_one_name_for_the_customer_key_file() -> None:
    p = parser()
    for argv in (["point", "export", "vm1", "latest", "--disk", "0", "--out", "x"],
                 ["failover", "unplanned", "vm1"], ["failover", "test", "vm1"]):
        assert p.parse_args([*argv, "--encryption-key-file", "k"]).encryption_key_file == "k"
    # the older name on export still works, hidden from the help
    args = p.parse_args(["point", "export", "vm1", "latest", "--disk", "0", "--out", "x", "--key-file", "k"])
    assert args.encryption_key_file == "k"
    helptext = asr("point", "export", "--help").stdout
    assert "--encryption-key-file" in helptext and "--key-file" not in helptext.replace("--encryption-key-file", "")


def test_bash_completion_completes_commands_and_options(tmp_path: Path) -> None:
    script = tmp_path / "asr.bash"
    script.write_text(asr("completion", "bash").stdout)

    def complete(*words: str) -> set[str]:
        cmd = (f"source {script}; COMP_WORDS=({' '.join(words)}); COMP_CWORD={len(words) - 1}; "
               f"COMP_LINE='{' '.join(words)}'; COMP_POINT=${{#COMP_LINE}}; _shtab_asr; "
               'printf "%s\\n" "${COMPREPLY[@]}"')
        res = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=30, check=False)
        assert res.returncode == 0, res.stderr
        return set(res.stdout.split())

    assert "point" in complete("asr", "po")
    assert {"list", "verify", "export"} <= complete("asr", "point", "''")
    assert "--encryption-key-file" in complete("asr", "point", "export", "--enc")
    assert {"warning", "critical"} <= complete("asr", "event", "list", "--severity", "''")


def test_billing_table_rounds_for_people(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from asrcli import billing_cmds
    from asrpb import operator_pb2_grpc

    report = operator_pb2.BillingReport(
        month="2026-11", total=1.23456, protection_charge=1.23456, replicated_bytes=3 << 30,
        vms=[operator_pb2.BillingLine(vm_id="a", name="web01", protected_days=0.003867743404375182,
                                      replicated_bytes=5 << 20)])

    class _Stub:
        def __init__(self, channel: object) -> None:
            self.Report = lambda req, timeout=None: report   # noqa: N815 - the RPC's name

    class _Client:
        channel = None

        def call(self, fn: Any, req: Any, timeout: float | None = None) -> Any:
            return fn(req)

    monkeypatch.setattr(operator_pb2_grpc, "BillingStub", _Stub)
    args = argparse.Namespace(vault="v", month="2026-11", scenario="onprem-to-cloud")
    doc, printer = billing_cmds.billing_report(_Client(), args)   # type: ignore[arg-type]
    assert doc["vms"][0]["replicated_bytes"] == 5 << 20           # JSON keeps the exact figures
    printer(doc)
    out = capsys.readouterr().out
    assert "0.004" in out and "0.003867743404375182" not in out and "5 MiB" in out and "1.23\n" in out, out
    assert "3 GiB" in out
