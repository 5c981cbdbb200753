#!/usr/bin/env bash
# Writes the lock files from pyproject.toml: every package pinned, with the hashes of all its
# published files, for every platform (--universal: Windows-only dependencies keep their
# markers). deploy/setup.sh installs from them with --require-hashes.
#   bash deploy/lock.sh                     after changing dependencies in pyproject.toml
#   bash deploy/lock.sh --upgrade           move every pin to the newest allowed release
#   bash deploy/lock.sh --upgrade-package protobuf
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-.venv/bin/uv}
opts=(--universal --python-version 3.11 --generate-hashes --quiet --custom-compile-command "bash deploy/lock.sh")
"$UV" pip compile pyproject.toml "${opts[@]}" "$@" -o requirements.lock
# the development lock keeps every runtime pin of requirements.lock
"$UV" pip compile pyproject.toml --extra dev --constraint requirements.lock "${opts[@]}" "$@" -o requirements-dev.lock
