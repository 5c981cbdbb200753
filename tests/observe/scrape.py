"""Reading a daemon's /metrics page: the samples by name and labels, and promtool's verdict."""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def page(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return str(r.read().decode())


def samples(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = float(s.value)
    return out


def value(found: Samples, name: str, **labels: str) -> float | None:
    """The sample ``name`` whose labels include ``labels`` (exactly one must match), or None."""
    want = set(labels.items())
    hits = [v for (n, ls), v in found.items() if n == name and want <= set(ls)]
    assert len(hits) <= 1, f"{name}{labels} matches {len(hits)} samples"
    return hits[0] if hits else None


def promtool_check(text: str) -> None:
    """``promtool check metrics`` accepts the page: exit 0 and nothing said."""
    exe = shutil.which("promtool")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("promtool missing: deploy/setup.sh installs Debian's prometheus package")
        pytest.skip("promtool is not installed (Debian package prometheus; deploy/setup.sh installs it)")
    res = subprocess.run([exe, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and not res.stdout.strip() and not res.stderr.strip(), res.stdout + res.stderr
