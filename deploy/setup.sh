#!/usr/bin/env bash
# All set-up on a fresh Debian 12 machine with Python 3.11: Debian packages (as root),
# the virtual environment with every Python dependency, and Azurite for the blob backend.
# Idempotent: run it as often as you like.
#   bash deploy/setup.sh              the development and test set-up (requirements-dev.lock)
#   bash deploy/setup.sh --runtime    only what the daemons need (requirements.lock)
# Python packages come from the lock files, pinned with hashes (bash deploy/lock.sh writes them).
set -euo pipefail
cd "$(dirname "$0")/.."
# Another apt run (unattended-upgrades, a second set-up) may hold apt's locks for a while:
# wait up to APT_WAIT seconds instead of failing at once. DPkg::Lock::Timeout makes install
# wait for the dpkg lock; apt-get update ignores it for the lists lock (apt 2.6), so it is
# retried while that lock is taken.
APT_WAIT=${APT_WAIT:-120}
apt_update() {
  local deadline=$((SECONDS + APT_WAIT)) out
  until out=$(apt-get -o DPkg::Lock::Timeout="$APT_WAIT" update -qq 2>&1); do
    if ! grep -q "Could not get lock" <<<"$out" || [ "$SECONDS" -ge "$deadline" ]; then
      echo "$out" >&2
      return 1
    fi
    sleep 2
  done
}
if [ "$(id -u)" = 0 ]; then
  need=""
  # python3-venv: Debian splits ensurepip out; prometheus: promtool, which checks the daemons' /metrics;
  # systemd: systemd-analyze, which verifies the units and scores their sandboxing (a container may lack it);
  # iproute2: ip, which makes the network namespaces of the site-to-site partition test;
  # chromium: the browser the portal's tests drive with Playwright (never a browser Playwright downloads);
  # borgbackup and e2fsprogs: the peer and the image builder (mkfs.ext4 -d) of bench/real_data.py;
  # postgresql: the second metadata engine (tests start their own server with initdb/pg_ctl)
  for pkg in python3-venv qemu-utils tinyproxy squid rsync restic prometheus systemd iproute2 chromium borgbackup e2fsprogs postgresql; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need="$need $pkg"
  done
  command -v npm >/dev/null 2>&1 || need="$need nodejs npm"
  if [ -n "$need" ]; then
    echo "installing Debian packages:$need"
    apt_update
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=$APT_WAIT install -y -qq $need >/dev/null
  fi
  # The Debian squid, tinyproxy, prometheus and postgresql packages start system services we do not use.
  systemctl disable --now squid tinyproxy prometheus prometheus-node-exporter postgresql >/dev/null 2>&1 || true
else
  for tool in qemu-img tinyproxy npm promtool systemd-analyze /usr/lib/postgresql/15/bin/initdb; do
    command -v "$tool" >/dev/null 2>&1 || echo "warning: $tool missing; as root this script installs it" >&2
  done
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
lock=requirements-dev.lock
[ "${1:-}" = "--runtime" ] && lock=requirements.lock
.venv/bin/pip install -q --disable-pip-version-check --require-hashes -r "$lock"
# the project itself, editable; its dependencies are the locked ones above
.venv/bin/pip install -q --disable-pip-version-check --no-deps -e .
[ "$lock" = requirements.lock ] && exit 0   # Azurite is for the tests
if [ ! -e .tools ] && [ -n "${ASR_TOOLS_FROM:-}" ]; then
  ln -s "$ASR_TOOLS_FROM" .tools   # reuse an installed Azurite (the clean-clone test does)
fi
if [ ! -x .tools/node_modules/.bin/azurite-blob ]; then
  npm install --prefix .tools --no-audit --no-fund --loglevel=error azurite@3 >/dev/null
fi
