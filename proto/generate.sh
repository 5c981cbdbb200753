#!/usr/bin/env bash
# Regenerates the Python stubs in asrpb/ from proto/asrpb/*.proto.
#   bash proto/generate.sh            write asrpb/*_pb2*.py(i)
#   bash proto/generate.sh --check    fail if the committed stubs are stale (CI runs this)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
out=.
if [ "${1:-}" = "--check" ]; then
  out=$(mktemp -d); trap 'rm -rf "$out"' EXIT; mkdir -p "$out/asrpb"
fi
"$PY" -m grpc_tools.protoc -Iproto --python_out="$out" --grpc_python_out="$out" --pyi_out="$out" proto/asrpb/*.proto
if [ "${1:-}" = "--check" ]; then
  for f in "$out"/asrpb/*_pb2*; do
    if ! cmp -s "$f" "asrpb/$(basename "$f")"; then
      echo "stale generated stub: asrpb/$(basename "$f"); run: bash proto/generate.sh" >&2; exit 1
    fi
  done
  extra=$(comm -13 <(ls "$out"/asrpb | sort) <(ls asrpb | grep _pb2 | sort) || true)
  [ -z "$extra" ] || { echo "stub without .proto: $extra" >&2; exit 1; }
  echo "generated stubs are up to date"
fi
