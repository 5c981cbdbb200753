#!/usr/bin/env bash
# Set up, check the generated stubs, lint and type-check, then run the whole test suite.
# Extra arguments go to pytest (e.g. -k registration).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh
bash proto/generate.sh --check
.venv/bin/ruff check .
.venv/bin/mypy .
exec .venv/bin/python -m pytest -q -p no:cacheprovider --durations=20 "$@"
