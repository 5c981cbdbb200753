"""A private Azurite blob service for the test session (npm package, installed into .tools/
by deploy/setup.sh), killed at the end."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
AZURITE = REPO / ".tools" / "node_modules" / ".bin" / "azurite-blob"
# Azurite's well-known development account key (public, documented by Microsoft).
DEV_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def azurite() -> Iterator[str]:
    """Connection string of a private Azurite blob service, killed at the end."""
    if not AZURITE.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{AZURITE} missing: run npm install --prefix {REPO}/.tools azurite")
        pytest.skip("Azurite not installed (npm install --prefix .tools azurite)")
    workdir = tempfile.mkdtemp(prefix="azurite-")
    port = _free_port()
    log = open(os.path.join(workdir, "azurite.log"), "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port),
         "--location", workdir, "--disableTelemetry", "--skipApiVersionCheck", "--silent"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    conn = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={DEV_KEY};BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"Azurite exited with {proc.returncode}; see {workdir}/azurite.log")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("Azurite did not start listening within 30 s")
                time.sleep(0.1)
        yield conn
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)
