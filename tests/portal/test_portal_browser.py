"""Issue 13: the portal in a real browser (Debian's chromium driven by Playwright) against a
real running site. The tests share one site and run in file order: the test failover leaves
the VM Protected, the Reader changes nothing, and the plan's planned failover comes last."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from playwright.sync_api import expect

from tests.failover.fixture import VAULT, assert_disks_equal, recovered, vm_state
from tests.harness import BIN, run, wait_for
from tests.portal.conftest import Portal, sign_in

JOB_S = 180_000   # ms: a job's whole run, in the browser's waits


def test_contributor_test_failover(portal: Portal, browser: Any) -> None:
    """Must-show 1 (and 4: the dashboard, the VM's page and a running job are photographed)."""
    p = portal.p
    point = p.once()["point_id"]
    refs = p.snapshot_raw(portal.shots, "p0")
    alice = portal.operator("alice", "Contributor")
    page = sign_in(browser, portal, "alice", alice["password"])
    expect(page.get_by_role("heading", name="Replication health")).to_be_visible()
    portal.shot(page, "dashboard")

    page.get_by_role("link", name="Virtual machines").click()
    page.get_by_role("link", name="vm1").click()
    expect(page.get_by_test_id("protection-state")).to_have_text("Protected")
    portal.shot(page, "vm")
    page.set_viewport_size({"width": 420, "height": 800})   # a narrow window: one column, nothing cut off
    assert page.evaluate("document.documentElement.scrollWidth") <= 420
    portal.shot(page, "vm-narrow")
    page.set_viewport_size({"width": 1280, "height": 800})
    page.get_by_role("link", name="Test failover").click()
    expect(page.locator(".effect")).to_contain_text("creates a test copy of VM vm1")
    page.get_by_label("Recovery point").select_option(point)
    page.get_by_role("button", name="Test failover").click()
    page.wait_for_url(re.compile(r".*/jobs/[^/]+$"))
    portal.shot(page, "job")
    expect(page.locator("#job-state")).to_have_text("Succeeded", timeout=JOB_S)

    [rvm] = recovered(p)
    assert rvm["kind"] == "test" and rvm["point_id"] == point
    assert_disks_equal(rvm, refs)
    assert vm_state(p)["protection_state"] == "TestFailoverCleanupPending"

    page.goto(f"{portal.url}/vaults/contoso/vms/vm1")
    page.get_by_role("link", name="Complete test").click()
    page.get_by_role("button", name="Complete test").click()
    expect(page.locator("#job-state")).to_have_text("Succeeded", timeout=JOB_S)
    assert recovered(p) == []
    assert vm_state(p)["protection_state"] == "Protected"
    page.context.close()


def test_reader_changes_nothing(portal: Portal, browser: Any) -> None:
    """Must-show 3: no failover buttons for a Reader, and the request sent by hand is 403."""
    bob = portal.operator("bob", "Reader")
    page = sign_in(browser, portal, "bob", bob["password"])
    page.goto(f"{portal.url}/vaults/contoso/vms/vm1")
    expect(page.get_by_test_id("protection-state")).to_have_text("Protected")
    expect(page.locator("#h-vm + dl")).to_contain_text("compression balanced")   # the policy's (the default)
    assert page.get_by_role("link", name="Test failover").count() == 0
    page.keyboard.press("Tab")   # keyboard first: the skip link, then the navigation
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    assert page.locator(".actions a").count() == 0
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    res = page.context.request.post(f"{portal.url}/vaults/contoso/vms/vm1/do/test-failover",
                                    form={"csrf": csrf or "", "point": "latest", "network": "none"},
                                    max_redirects=0)
    assert res.status == 403 and "ASR-0032" in res.text()
    res = page.context.request.get(f"{portal.url}/vaults/contoso/vms/vm1/confirm/test-failover")
    assert res.status == 403
    assert vm_state(portal.p)["protection_state"] == "Protected"
    # every page reads for a Reader
    for path, heading in (("/", "Dashboard"), ("/vms?health=Normal", "Virtual machines"), ("/plans", "Recovery plans"),
                          ("/jobs", "Jobs"), ("/servers", "Servers"), ("/storage", "Storage accounts"),
                          ("/billing", "Billing"), ("/events", "Events")):
        res = page.goto(f"{portal.url}/vaults/contoso{path}")
        assert res is not None and res.status == 200, path
        expect(page.get_by_role("heading", level=1).first).to_contain_text(heading)
    page.goto(f"{portal.url}/vaults/contoso/vms?health=Normal")
    expect(page.locator("table")).to_contain_text("vm1")
    res = page.goto(f"{portal.url}/vaults/contoso/vms/nosuchvm")
    assert res is not None and res.status == 404
    expect(page.get_by_role("alert")).to_contain_text("ASR-0040")
    page.context.close()


def test_csrf_cookies_headers(portal: Portal, browser: Any) -> None:
    """Must-show 3: a POST without the CSRF token is refused; the session cookie's flags; the
    security headers."""
    carol = portal.operator("carol", "Contributor")
    page = sign_in(browser, portal, "carol", carol["password"])
    [cookie] = [c for c in page.context.cookies() if c["name"] == "asr_session"]
    assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    res = page.context.request.post(f"{portal.url}/vaults/contoso/vms/vm1/do/test-failover",
                                    form={"point": "latest"}, max_redirects=0)
    assert res.status == 403 and "CSRF" in res.text()
    res = page.context.request.post(f"{portal.url}/vaults/contoso/vms/vm1/do/test-failover",
                                    form={"csrf": "forged", "point": "latest"}, max_redirects=0)
    assert res.status == 403
    assert vm_state(portal.p)["protection_state"] == "Protected"
    h = page.context.request.get(f"{portal.url}/vaults/contoso/").headers
    assert "frame-ancestors 'none'" in h["content-security-policy"]
    assert "script-src 'self'" in h["content-security-policy"] and "unsafe-inline" not in h["content-security-policy"]
    assert h["x-content-type-options"] == "nosniff"
    page.context.close()


def test_sign_in_rate_limited(portal: Portal, browser: Any) -> None:
    """Must-show 3: five wrong passwords, then even the right one is refused (429, ASR-0034)."""
    dave = portal.operator("dave", "Operator")
    ctx = browser.new_context(ignore_https_errors=True)
    page = ctx.new_page()
    for attempt in range(5):
        page.goto(portal.url + "/signin")
        page.get_by_label("Operator name").fill("dave")
        page.get_by_label("Password").fill(f"wrong-{attempt}")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_contain_text("ASR-0031")
    page.goto(portal.url + "/signin")
    page.get_by_label("Operator name").fill("dave")
    page.get_by_label("Password").fill(dave["password"])
    with page.expect_response(lambda r: r.request.method == "POST") as resp:
        page.get_by_role("button", name="Sign in").click()
    assert resp.value.status == 429
    expect(page.get_by_role("alert")).to_contain_text("ASR-0034")
    assert not [c for c in ctx.cookies() if c["name"] == "asr_session"]
    ctx.close()


def test_grpc_roles(portal: Portal, tmp_path: Path) -> None:
    """The API holds operator credentials to the same roles: a Reader's credential lists VMs
    but may not fail over (ASR-0032); an Operator's may not create operators."""
    cloud = portal.p.cloud

    def asr_as(cred: Path, *args: str) -> Any:
        return run([str(BIN / "asr"), *args], env={**cloud.env(), "ASR_CREDENTIALS": str(cred)})

    reader = tmp_path / "reader.json"
    portal.operator("erin", "Reader", "--credentials-out", str(reader))
    assert asr_as(reader, "vm", "list", *VAULT).returncode == 0
    res = asr_as(reader, "failover", "test", "vm1", *VAULT)
    assert res.returncode == 32 and "Reader" in res.stderr, res.stderr
    operator = tmp_path / "operator.json"
    portal.operator("frank", "Operator", "--credentials-out", str(operator))
    res = asr_as(operator, "operator", "create", "gina", "--role", "Reader")
    assert res.returncode == 32 and "Contributor" in res.stderr, res.stderr
    assert vm_state(portal.p)["protection_state"] == "Protected"


def test_plan_manual_action(portal: Portal, browser: Any) -> None:
    """Must-show 2: planned failover of a plan from its page stops at the manual action with its
    instruction, is resumed from the page, and completes."""
    cloud = portal.p.cloud
    cloud.asr("plan", "create", "web", "--vm", "vm1", *VAULT)
    cloud.asr("plan", "add-action", "web", "--group", "1", "--when", "after", "--action-name", "dns",
              "--manual", "Point the DNS at the recovered web tier, then resume", *VAULT)
    hank = portal.operator("hank", "Operator")
    page = sign_in(browser, portal, "hank", hank["password"])
    page.get_by_role("link", name="Recovery plans").click()
    page.get_by_role("link", name="web").click()
    expect(page.locator(".action")).to_contain_text("Point the DNS")
    page.get_by_role("link", name="Planned failover", exact=True).click()
    expect(page.locator(".effect")).to_contain_text("shuts plan web down on premises")
    page.get_by_role("button", name="Planned failover", exact=True).click()
    expect(page.locator("#job-state")).to_have_text("Suspended", timeout=JOB_S)
    expect(page.locator(".instruction")).to_have_text("Point the DNS at the recovered web tier, then resume")
    portal.shot(page, "job-manual-action")
    page.get_by_role("button", name="Resume").click()
    expect(page.locator("#job-state")).to_have_text("Succeeded", timeout=JOB_S)
    wait_for(lambda: vm_state(portal.p)["protection_state"] == "FailoverCommitPending", 30,
             what="the VM to wait for commit")
    page.context.close()
