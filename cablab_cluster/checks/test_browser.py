"""A person with a browser: Debian's Chromium, driven by Playwright, signs in through the
lab's login form, lands in JupyterLab, opens a sample notebook from the file browser,
runs all its cells and sees their output. Screenshots go to $CABLAB_REPORT_DIR (the lab:
lab/reports/). Lab clusters only (the form is the lab password's); the served TLS
certificate is checked by test_hub.py, so the browser is told to accept the lab's own."""

from __future__ import annotations

import os
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest

pytestmark = pytest.mark.cluster

CHROMIUM = os.environ.get("CABLAB_CHROMIUM", "/usr/bin/chromium")
# Flags that work on a machine without a GPU, a sandbox or outside network.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
START_TIMEOUT_MS = 600_000  # the spawn under emulation
RUN_TIMEOUT_MS = 600_000


# The person's own user: no other check stops or starts her server (the first other user was
# alice, whose server the isolation check restarts).
BROWSER_USER = "heidi"
BROWSER_LANE = "browser"  # conftest.py: `lanes`


@pytest.fixture(scope="module")
def browser_user(spec, username) -> str:
    if BROWSER_USER not in {u.name for u in spec.userlist.users}:
        pytest.skip(f"the userlist lacks {BROWSER_USER}, the browser check's own user")
    return BROWSER_USER


def screenshots_dir() -> Path:
    out = Path(os.environ.get("CABLAB_REPORT_DIR") or "lab/reports") / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    return out


def test_a_person_signs_in_and_runs_a_sample_notebook(cluster, hub_client, browser_user, password, lanes, timings):
    """The visit runs from the session's start in a lane of its own (conftest.py: `lanes`), beside the
    other checks: its spawn, JupyterLab's load and the notebook's kernel mostly wait on one VM while
    they use others. Here its outcome is claimed: its own failure, or its timings."""
    lane = lanes.get(BROWSER_LANE)
    if lane is not None:
        timings.update(lane.claim())
    else:
        timings.update(visit(cluster, hub_client, browser_user, password, screenshots_dir()))


def visit(cluster, hub_client, browser_user: str, password: str, screenshots: Path) -> dict[str, float]:
    """Sign in through the form, JupyterLab, a sample notebook run in full, the server stopped;
    returns what it timed. Fails (AssertionError, Playwright's TimeoutError) at the first thing a
    person would not see."""
    timings: dict[str, float] = {}
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (lab/host-setup.sh installs it)")
    from playwright.sync_api import expect, sync_playwright

    from cablab_cluster.render import sample_notebooks

    notebook = sample_notebooks()[0][0]
    hub = hub_client()
    public = cluster.hub.public_host
    base = f"https://{hub.netloc}"
    # The browser resolves the public name to the hub host's address, as DNS would.
    args = FLAGS + ([f"--host-resolver-rules=MAP {public} {cluster.hub_host.address}"] if public != str(
        cluster.hub_host.address) else [])
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)
        try:
            page = browser.new_context(ignore_https_errors=True, viewport={"width": 1400, "height": 900}).new_page()
            # JupyterLab restores the user's last workspace (an open notebook, the file browser in
            # samples/ from an earlier visit): the sign-in leads to the default one (?reset), the file
            # browser at home, through the spawn page: one JupyterLab load, not two.
            lab = f"/user/{browser_user}/lab?reset"
            page.goto(f"{base}/hub/login?" + urlencode({"next": "/hub/spawn?" + urlencode({"next": lab})}))
            expect(page.get_by_role("button", name="Sign in with GitHub")).to_be_visible()  # a link styled as a button
            expect(page.locator("#login_submit")).to_be_visible()  # the lab form beside it
            page.screenshot(path=str(screenshots / "1-login.png"))

            t0 = time.monotonic()
            page.fill("#username_input", browser_user)
            page.fill("#password_input", password)
            page.click("#login_submit")
            page.wait_for_url(f"**/user/{browser_user}/lab**", timeout=START_TIMEOUT_MS)
            files = page.locator(".jp-DirListing-item", has_text="samples")
            files.wait_for(timeout=START_TIMEOUT_MS)
            timings["browser: sign in -> JupyterLab usable"] = round(time.monotonic() - t0, 1)
            page.screenshot(path=str(screenshots / "2-jupyterlab.png"))

            files.dblclick()
            item = page.locator(".jp-DirListing-item", has_text=notebook)
            item.wait_for(timeout=60_000)
            item.dblclick()
            panel = page.locator(".jp-NotebookPanel:visible")
            panel.wait_for(timeout=120_000)
            status = page.locator("#jp-main-statusbar")
            expect(status).to_contain_text("Idle", timeout=START_TIMEOUT_MS)  # the kernel started

            t0 = time.monotonic()
            page.locator(".lm-MenuBar-item", has_text="Run").first.click()
            page.locator(".lm-Menu-item", has_text="Run All Cells").first.click()
            # Every code cell has run ([n], no [*]) and the plots are there.
            page.wait_for_function(
                """() => {
                    const prompts = [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell.jp-CodeCell .jp-InputPrompt')];
                    return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
                }""", timeout=RUN_TIMEOUT_MS)
            expect(status).to_contain_text("Idle", timeout=RUN_TIMEOUT_MS)
            timings[f"browser: run all cells of {notebook}"] = round(time.monotonic() - t0, 1)
            outputs = panel.locator(".jp-OutputArea-output")
            assert outputs.count() > 0, f"{notebook} showed no output"
            assert panel.locator(".jp-RenderedImage img").count() > 0, f"{notebook} showed no plot"
            errors = [t for t in panel.locator("[data-mime-type='application/vnd.jupyter.stderr']").all_inner_texts()
                      if "Traceback" in t or "Error" in t]
            assert not errors, f"{notebook} raised in the browser:\n" + "\n".join(errors)[:3000]
            page.screenshot(path=str(screenshots / "3-notebook-ran.png"), full_page=True)
        finally:
            browser.close()
    # The person's server: stopped through the hub (an admin-free user stops their own).
    session = hub_client().logged_in(browser_user, password)
    response = session.api("DELETE", f"/users/{browser_user}/server")
    assert response.status in (202, 204), f"stopping {browser_user}'s server: {response}"
    return timings
