#!/usr/bin/env bash
# Set up, then run the whole story on embedded defaults (see deploy/demo.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh
exec .venv/bin/python deploy/demo.py "$@"
