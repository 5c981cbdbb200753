"""One real running site for the portal's browser tests (module scope, to keep them fast): the
cloud service with ``portal_listen`` set, a provider and an agent with a protected VM (the
replication fixture), and Debian's chromium driven by Playwright."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Cloud, Procs, free_port
from tests.replication.fixture import Protected, protect

CHROMIUM = "/usr/bin/chromium"


@dataclass
class Portal:
    p: Protected
    url: str
    shots: Path

    def operator(self, name: str, role: str, *extra: str) -> dict[str, Any]:
        return dict(self.p.cloud.asr_json("operator", "create", name, "--role", role, *extra))

    def shot(self, page: Any, name: str) -> Path:
        """A screenshot under the test's directory, copied to $ASR_SCREENSHOTS_DIR when set."""
        out = self.shots / f"{name}.png"
        page.screenshot(path=str(out), full_page=True)
        if os.environ.get("ASR_SCREENSHOTS_DIR"):
            dest = Path(os.environ["ASR_SCREENSHOTS_DIR"])
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy(out, dest / out.name)
        return out


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Portal]:
    if not os.path.exists(CHROMIUM) and not os.environ.get("CI"):
        pytest.skip("Debian's chromium is not installed (deploy/setup.sh installs it)")
    root = tmp_path_factory.mktemp("portal")
    procs = Procs(root)
    try:
        cloud = Cloud(procs, root / "cloud")
        port = free_port()
        toml = cloud.data_dir / "cloudsvc.toml"
        toml.write_text(toml.read_text().replace('portal_listen = ""', f'portal_listen = "127.0.0.1:{port}"'))
        cloud.start()
        p = protect(cloud, root)
        shots = root / "screenshots"
        shots.mkdir()
        yield Portal(p, f"https://127.0.0.1:{port}", shots)
    finally:
        procs.stop_all()


@pytest.fixture(scope="module")
def browser(portal: Portal) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def sign_in(browser: Any, portal: Portal, name: str, password: str) -> Any:
    """A new browser context signed in as ``name``; returns its page (on the dashboard)."""
    ctx = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 800})
    ctx.set_default_timeout(30_000)
    page = ctx.new_page()
    page.goto(portal.url + "/signin")
    page.get_by_label("Operator name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/vaults/contoso/")
    return page
