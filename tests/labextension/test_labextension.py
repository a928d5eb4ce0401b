"""The JupyterLab extension in a real browser (Debian's chromium through Playwright) against a real Jupyter
server with the secure server extension and a session policy per role, run as an unprivileged user (so that
JupyterLab's own files lie in folders the server cannot write, as in a session's sandbox).

Each test asserts what the person sees: the banner, menus and context menus without the refused items, the
refusal dialog for a dropped file (and nothing on disk), an allowed download that really arrives.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
from playwright.sync_api import sync_playwright
from serverext_helpers import CANARY, TEST_TOKEN, Server, launch, make_projects

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
EXTENSION = Path(__file__).resolve().parents[2] / "jupyter_securehpc" / "labextension" / "package.json"
SESSIONS = {
    # role -> policy: the scientist and the observer under the default policy, an owner who may download.
    "data_scientist": {},
    "observer": {},
    "data_owner": {"download_roles": ["data_owner"]},
}
# Command ids and labels that take a file's bytes out of the project or bring files in.
OUTWARD = re.compile(r"download|export|upload|open-browser-tab|open-url", re.IGNORECASE)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: `securehpc dev install` installs it"
    assert EXTENSION.exists(), "the labextension is not built: `bash scripts/local.sh test` builds it"
    with sync_playwright() as driver:
        # --no-sandbox: the tests run as root, where chromium's own sandbox refuses to start.
        instance = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture(scope="module")
def servers(unix_user) -> Iterator[dict[str, Server]]:
    started: dict[str, Server] = {}
    # Not under pytest's folder for root (0700): the server's user must reach its project.
    top = Path(tempfile.mkdtemp(prefix="securehpc-lab-"))
    top.chmod(0o755)
    try:
        for role, policy in SESSIONS.items():
            base = top / role
            base.mkdir(mode=0o755)
            root = make_projects(base / "data")
            home = base / "home"
            home.mkdir()
            for path in [base / "data", home, *(base / "data").rglob("*"), *home.rglob("*")]:
                os.chown(path, unix_user.uid, unix_user.gid)
            session = {"project": "cardio", "user": "alice", "role": role, "policy": policy}
            started[role] = launch(base / "server", root, session=session, audit=base / "audit.log",
                                   user=unix_user.name, extra_env={"HOME": str(home)})  # fmt: skip
        yield started
    finally:
        for server in started.values():
            server.stop()
        shutil.rmtree(top, ignore_errors=True)


def open_lab(browser, server: Server, **context: object):
    page = browser.new_context(accept_downloads=True, **context).new_page()
    page.goto(f"http://127.0.0.1:{server.port}/lab?token={TEST_TOKEN}")
    page.wait_for_selector("body[data-securehpc-ready='true']", state="attached", timeout=90_000)
    page.wait_for_selector(".jp-DirListing-item[title*='data.csv']", timeout=30_000)
    return page


def without_session_in_page_config(route) -> None:
    """The real /lab page with ``securehpcSession`` taken out of its configuration (a server without the hook)."""
    response = route.fetch()
    html = response.text()
    marker = '<script id="jupyter-config-data" type="application/json">'
    start = html.index(">", html.index(marker)) + 1
    end = html.index("</script>", start)
    config = json.loads(html[start:end])
    assert config.pop("securehpcSession")["project"] == "cardio"
    route.fulfill(response=response, body=html[:start] + json.dumps(config) + html[end:])


def menu_texts(page) -> str:
    # Hidden items stay in the menu's DOM (lm-mod-hidden): only what is shown counts.
    items = page.locator(".lm-Menu:visible .lm-Menu-item:not(.lm-mod-hidden) .lm-Menu-itemLabel")
    return " | ".join(text for text in items.all_inner_texts() if text.strip())


def file_menu(page) -> str:
    page.locator(".lm-MenuBar-itemLabel", has_text="File").first.click()
    page.wait_for_selector(".lm-Menu:visible")
    texts = menu_texts(page)
    page.keyboard.press("Escape")
    return texts


def context_menu_of(page, name: str) -> str:
    page.locator(f".jp-DirListing-item[title*='{name}']").first.click(button="right")
    page.wait_for_selector(".lm-Menu:visible")
    texts = menu_texts(page)
    page.keyboard.press("Escape")
    return texts


def test_banner_and_title_show_project_and_role(browser, servers):
    for role, name in (("data_scientist", "data scientist"), ("observer", "observer")):
        page = open_lab(browser, servers[role])
        banner = page.inner_text("#securehpc-banner")
        assert "Project: cardio" in banner and f"Role: {name}" in banner, banner
        assert re.search(r"Session ends in: at most \d", banner), banner
        assert page.title().startswith("[cardio] ")
        page.context.close()


def test_the_session_comes_from_the_page_without_a_request(browser, servers):
    """The server puts the session in JupyterLab's page configuration: the extension decides from it when it
    activates and does not ask ``/securehpc/session``."""
    page = browser.new_context().new_page()
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url) if "securehpc/session" in request.url else None)
    page.goto(f"http://127.0.0.1:{servers['data_scientist'].port}/lab?token={TEST_TOKEN}")
    page.wait_for_selector("body[data-securehpc-ready='true']", state="attached", timeout=90_000)
    assert "Project: cardio" in page.inner_text("#securehpc-banner")
    assert "filebrowser:download" in page.evaluate("window.jupyterSecureHPC.hidden()")
    assert asked == []
    page.context.close()


def test_without_the_session_in_the_page_everything_is_hidden_until_the_endpoint_answers(browser, servers):
    """A page without the session (a server without the page configuration hook): the extension asks
    ``/securehpc/session`` without holding up JupyterLab; until the answer, every download, upload and
    terminal command is hidden even for an owner who may download, then what the owner may use is shown."""
    page = browser.new_context().new_page()
    held: list = []
    page.route(lambda url: urlparse(url).path == "/lab", without_session_in_page_config)
    page.route(lambda url: urlparse(url).path == "/securehpc/session", lambda route: held.append(route))
    page.goto(f"http://127.0.0.1:{servers['data_owner'].port}/lab?token={TEST_TOKEN}")
    # The file browser lists the project while the session's answer is held back.
    page.wait_for_selector(".jp-DirListing-item[title*='data.csv']", timeout=90_000)
    assert len(held) == 1
    hidden = page.evaluate("window.jupyterSecureHPC.hidden()")
    assert {"filebrowser:download", "docmanager:download", "filebrowser:open-url"} <= set(hidden), hidden
    assert page.locator(".jp-FileBrowser-toolbar [data-jp-item-name='uploader']").is_hidden()
    assert page.locator("#securehpc-banner").count() == 0
    assert "Download" not in context_menu_of(page, "data.csv")
    held[0].continue_()
    page.wait_for_selector("body[data-securehpc-ready='true']", state="attached", timeout=30_000)
    assert "Role: data owner" in page.inner_text("#securehpc-banner")
    hidden = page.evaluate("window.jupyterSecureHPC.hidden()")
    assert "filebrowser:download" not in hidden and "filebrowser:open-url" not in hidden, hidden
    assert "Download" in context_menu_of(page, "data.csv")
    assert page.locator(".jp-FileBrowser-toolbar [data-jp-item-name='uploader']").is_visible()
    page.context.close()


@pytest.mark.parametrize("role", ["data_scientist", "observer"])
def test_no_download_export_or_upload_where_the_role_may_not(browser, servers, role):
    page = open_lab(browser, servers[role])
    menu = file_menu(page)
    assert "Download" not in menu and "Save and Export Notebook As" not in menu, menu
    assert "Save File" in menu or "Save" in menu  # the menu is really there
    for name in ("data.csv", "notebook.ipynb"):
        items = context_menu_of(page, name)
        assert "Rename" in items, items
        for refused in ("Download", "Copy Download Link", "Open in New Browser Tab"):
            assert refused not in items, (name, refused, items)
    # The button exists in the page (JupyterLab's toolbar item "uploader") and is not shown.
    upload_button = page.locator(".jp-FileBrowser-toolbar [data-jp-item-name='uploader']")
    assert upload_button.count() == 1 and upload_button.is_hidden()
    assert page.locator(".jp-FileBrowser-toolbar [data-jp-item-name='refresh']").is_visible()
    # Every command of the registry that would take bytes out or bring files in is hidden: a command a newer
    # JupyterLab adds under another name is caught here.
    commands = page.evaluate("window.jupyterSecureHPC.commands()")
    outward = [c for c in commands if OUTWARD.search(c["id"]) or OUTWARD.search(c["label"] or "")]
    assert outward, "the registry lists no download command: the enumeration found nothing"
    shown = [c["id"] for c in outward if c["visible"]]
    assert shown == [], shown
    page.context.close()


def test_a_dropped_file_is_refused_with_an_explanation_and_nothing_is_written(browser, servers):
    server = servers["data_scientist"]
    page = open_lab(browser, server)
    page.evaluate(
        """() => {
            const transfer = new DataTransfer();
            transfer.items.add(new File(["patient,value\\n1,2\\n"], "brought-in.csv", {type: "text/csv"}));
            const target = document.querySelector(".jp-DirListing-content");
            for (const type of ["dragenter", "dragover", "drop"]) {
                target.dispatchEvent(new DragEvent(type, {dataTransfer: transfer, bubbles: true, cancelable: true}));
            }
        }"""
    )
    dialog = page.wait_for_selector(".jp-Dialog", timeout=15_000)
    text = dialog.inner_text()
    assert "not allowed for a data scientist in project cardio" in text, text
    assert "Ask the project's data owner" in text, text
    page.keyboard.press("Escape")
    page.wait_for_timeout(1000)  # an upload, had one started, would have reached the server by now
    assert not (server.root / "brought-in.csv").exists()
    page.context.close()


def test_a_notebook_opens_for_a_scientist_without_an_error(browser, servers):
    page = open_lab(browser, servers["data_scientist"])
    server = servers["data_scientist"]
    before = len(server.audit_lines())
    page.locator(".jp-DirListing-item[title*='notebook.ipynb']").first.dblclick()
    # What the notebook shows is on screen (its output holds the canary).
    page.wait_for_selector(f".jp-NotebookPanel .jp-OutputArea-output:has-text('{CANARY}')", timeout=30_000)
    # (The notebook names no kernel: JupyterLab asks for one. Nothing may say it could not be loaded.)
    dialogs = page.locator(".jp-Dialog").all_inner_texts()
    assert not [text for text in dialogs if "Error" in text or "refused" in text], dialogs
    refusals = [e for e in server.audit_lines()[before:] if "notebook.ipynb" in e["object"]]
    assert refusals == [], refusals
    page.context.close()


def test_an_owner_who_may_download_sees_download_and_gets_the_file(browser, servers):
    page = open_lab(browser, servers["data_owner"])
    # A data owner may upload (the default policy's upload_roles): the button is there.
    assert page.locator(".jp-FileBrowser-toolbar [data-jp-item-name='uploader']").is_visible()
    assert "Download" in file_menu(page)
    items = context_menu_of(page, "data.csv")
    assert "Download" in items, items
    page.locator(".jp-DirListing-item[title*='data.csv']").first.click(button="right")
    with page.expect_download(timeout=30_000) as arrived:
        page.locator(".lm-Menu:visible .lm-Menu-itemLabel", has_text="Download").first.click()
    path = arrived.value.path()
    assert Path(path).read_text() == f"id,value\n1,{CANARY}\n"
    page.context.close()


def test_notebook_7_shows_the_banner_and_hides_the_same_commands(browser, servers):
    """Notebook 7 is a JupyterLab application too: the extension loads there with the same decisions."""
    page = browser.new_context().new_page()
    page.goto(f"http://127.0.0.1:{servers['data_scientist'].port}/tree?token={TEST_TOKEN}")
    page.wait_for_selector("body[data-securehpc-ready='true']", state="attached", timeout=90_000)
    banner = page.inner_text("#securehpc-banner")
    assert "Project: cardio" in banner and "Role: data scientist" in banner, banner
    hidden = page.evaluate("window.jupyterSecureHPC.hidden()")
    assert {"filebrowser:download", "docmanager:download", "filebrowser:copy-download-link"} <= set(hidden), hidden
    commands = page.evaluate("window.jupyterSecureHPC.commands()")
    shown = [c["id"] for c in commands if c["visible"] and (OUTWARD.search(c["id"]) or OUTWARD.search(c["label"]))]
    assert shown == [], shown
    page.context.close()


def test_a_refusal_the_ui_did_not_foresee_is_explained(browser, servers):
    """Opening a data file as text, which the scientist's role may not (the editor is not a hidden command):
    the server refuses; JupyterLab's own error shows the policy's reason, and a notification adds what was
    refused and whom to ask."""
    page = open_lab(browser, servers["data_scientist"])
    page.locator(".jp-DirListing-item[title*='data.csv']").first.dblclick()
    note = page.wait_for_selector("text=/The server refused GET .*data.csv/", timeout=30_000)
    assert "Ask the project's data owner" in note.inner_text(), note.inner_text()
    page.keyboard.press("Escape")  # JupyterLab's own "File Load Error" dialog
    page.get_by_role("button", name="Why?").first.click()
    dialog = page.wait_for_selector(".jp-Dialog:has-text('The server refused')", timeout=15_000)
    text = dialog.inner_text()
    assert "does not let data_scientist read data files as text" in text and "Ask the project's data owner" in text
    assert CANARY not in page.content()
    page.context.close()
