"""VM definitions on the wire: vmspec.VmSpec <-> asr.v1.Vm (proto/asrpb/inventory.proto)."""

from __future__ import annotations

from google.protobuf.json_format import MessageToDict, ParseDict

from asrpb import inventory_pb2
from vmspec.model import VmSpec


def vm_to_spec(vm: inventory_pb2.Vm) -> VmSpec:
    doc = MessageToDict(vm, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    doc.pop("host", None)
    for d in doc.get("disks", []):
        d["virtual_size"] = int(d.get("virtual_size", 0))
        d["parent"] = d.get("parent") or None
    for n in doc.get("nics", []):
        n["address"] = n.get("address") or None
    return VmSpec.from_dict(doc)


def spec_to_vm(spec: VmSpec, host: str = "") -> inventory_pb2.Vm:
    doc = spec.to_dict()
    doc.pop("app_quiesce_hook", None)
    for d in doc.get("disks", []):
        d["parent"] = d.get("parent") or ""
    for n in doc.get("nics", []):
        n["address"] = n.get("address") or ""
    vm = ParseDict(doc, inventory_pb2.Vm(), ignore_unknown_fields=True)
    vm.host = host
    return vm
