"""JupyterLab with the extension through the whole system, in a real browser (Debian's chromium through
Playwright): a member signs in at the OpenID provider with password and one-time code, opens their secure
session (a Slurm job, the launcher's sandbox, behind the hub's proxy) and sees the project banner and no
Download, and a download they try anyway is refused by the server.

Real services: the tests' local cluster (Slurm with GPU GRES placeholders: no real GPU), OpenBao, the OpenID
provider, JupyterHub with configurable-http-proxy, bubblewrap and gocryptfs.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_hub import start, stop, wait_ready
from playwright.sync_api import sync_playwright

pytestmark = [pytest.mark.slurm, pytest.mark.openbao, pytest.mark.sandbox]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def session(e2e, token) -> Iterator[str]:
    response = start(e2e, token, "sleep", {"gpus": "0"})
    assert response.status_code in (201, 202), response.text
    wait_ready(e2e, token, "sleep")
    try:
        yield f"{e2e['layout'].hub_url}/user/{e2e['user'].name}/sleep"
    finally:
        stop(e2e, token, "sleep")


@pytest.fixture(scope="module")
def page(e2e, session):
    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: `securehpc dev install` installs it"
    with sync_playwright() as driver:
        # --no-sandbox: the tests run as root, where chromium's own sandbox refuses to start.
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            tab = browser.new_context(accept_downloads=True).new_page()
            # The member signs in as a person would: the hub's login button, the provider's form.
            tab.goto(f"{e2e['layout'].hub_url}/hub/oauth_login")
            account = e2e["account"]
            tab.fill("input[name=login]", account["username"])
            tab.fill("input[name=password]", account["password"])
            tab.fill("input[name=otp]", account["otp"])
            tab.click("button[type=submit]")
            tab.wait_for_url("**/hub/**", timeout=60_000)
            # The session's own URL: the hub's OAuth to the server, then JupyterLab (the spawner's default URL).
            tab.goto(session + "/")
            tab.wait_for_selector("body[data-securehpc-ready='true']", state="attached", timeout=120_000)
            yield tab
        finally:
            browser.close()


def test_the_member_lands_in_jupyterlab_with_the_project_banner(e2e, page):
    assert "/lab" in page.url, page.url
    banner = page.inner_text("#securehpc-banner")
    assert "Project: sleep" in banner and "Role: data scientist" in banner, banner
    assert page.title().startswith("[sleep] ")
    # The session came with the page (the server's page configuration hook wraps jupyterhub-singleuser's, which
    # set its own after ours): both are in it, so the extension decided without asking the server.
    # (Only these two fields leave the page: its configuration also holds the hub's token for this server.)
    project, hub_user = page.evaluate(
        "(c => [c.securehpcSession.project, c.hubUser])"
        "(JSON.parse(document.getElementById('jupyter-config-data').textContent))"
    )
    assert (project, hub_user) == ("sleep", e2e["user"].name)


def test_no_download_in_the_menus_and_the_server_refuses_one_anyway(e2e, page, session):
    page.locator(".lm-MenuBar-itemLabel", has_text="File").first.click()
    page.wait_for_selector(".lm-Menu:visible")
    items = page.locator(".lm-Menu:visible .lm-Menu-item:not(.lm-mod-hidden) .lm-Menu-itemLabel").all_inner_texts()
    page.keyboard.press("Escape")
    assert "Download" not in items and "Save and Export Notebook As" not in items, items
    assert page.evaluate("window.jupyterSecureHPC.hidden()")  # the extension really restricted the registry
    # The server decides on its own: a download typed into the address bar is refused, nothing arrives.
    answer = page.request.get(f"{session}/files/README.txt")
    assert answer.status == 403
