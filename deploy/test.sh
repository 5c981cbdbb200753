#!/usr/bin/env bash
# Set up, check the generated stubs, lint and type-check, then run the test suite: all of it on
# SQLite, then a PostgreSQL pass (ASR_TEST_DATABASE=postgresql: each cloud service gets a fresh
# database of a server the tests start) over the tests that reach the SQL of every cloudsvc module.
#   ASR_TEST_PG_FULL=1   the PostgreSQL pass runs everything
#   ASR_TEST_PG=0        no PostgreSQL pass
#   ASR_TEST_DATABASE=sqlite|postgresql   one pass only, on that engine (with any extra arguments)
#   ASR_TEST_WORKERS=N   pytest-xdist workers (default 2, one per core of the CI machine; 0: none).
#                        Each test file runs whole on one worker (--dist loadfile), so a file's
#                        module fixtures start once; every test starts its own daemons on free ports.
# Extra arguments go to pytest (e.g. -k registration) and then choose the tests of a single pass.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh
bash proto/generate.sh --check
.venv/bin/ruff check .
.venv/bin/mypy .
pytest=(.venv/bin/python -m pytest -q -p no:cacheprovider --durations=20)
workers=${ASR_TEST_WORKERS:-2}
if [ "$workers" != 0 ]; then pytest+=(-n "$workers" --dist loadfile); fi
if [ -n "${ASR_TEST_DATABASE:-}" ] || [ $# -gt 0 ]; then
  exec "${pytest[@]}" "$@"
fi
ASR_TEST_DATABASE=sqlite "${pytest[@]}"
[ "${ASR_TEST_PG:-1}" = 0 ] && exit 0
# about 4 minutes on 2 cores (two workers; 6.5 in one process): control plane, lifecycle, failover,
# replication, security, observe, and the chunk index of blob accounts (tests/vaultstore's blob cases,
# two services sharing no directory)
PG_TESTS=(tests/controlplane tests/security tests/failover/test_unplanned.py
          tests/failover/test_plans.py tests/failover/test_planned_failback.py tests/replication/test_points.py
          tests/replication/test_retention.py tests/replication/test_billing_metered.py
          tests/lifecycle/test_refusals.py tests/lifecycle/test_ownership.py tests/observe/test_daemon_metrics.py
          tests/sitetosite/test_site_to_site.py tests/portal/test_operators.py
          tests/vaultstore "tests/scaleout/test_two_services.py::test_replication_alternates_between_two_services[blob]")
[ "${ASR_TEST_PG_FULL:-0}" = 1 ] && PG_TESTS=(tests)
echo "PostgreSQL pass: ${PG_TESTS[*]}"
ASR_TEST_DATABASE=postgresql exec "${pytest[@]}" "${PG_TESTS[@]}"
