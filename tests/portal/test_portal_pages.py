"""The portal's web pages in a real browser (Debian's chromium through Playwright) against a real hub and its
managed portal service on the local cluster (tests/portal_site.py), each person signed in through the hub.

What a person sees: their projects with the Start button and the hub's link to the portal; a data owner adds
a member and changes their role, offers a dataset that the other project's data owner accepts (each after a
confirmation page), and revokes it; an admin changes a policy after its preview and the scientist's next
spawn page shows the new limit; a project one is not in answers 404 like one that does not exist; the admin
pages answer 403 to others; a form without the XSRF token is refused; bad input shows the form again with the
reason and what was typed. Refusals are in the audit log.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import portal_site
import pytest
import requests
from playwright.sync_api import Browser, Page, expect, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from portal_site import ADMIN, OBSERVER, OTHER_OWNER, OUTSIDER, OWNER, api, events

from jupyter_securehpc.portal.pages.common import ROLE_NAMES, minutes

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PORTAL = "/services/securehpc/"
CSP = "default-src 'self'; script-src 'self'; img-src 'self' data:; frame-ancestors 'none'"


@pytest.fixture(scope="module")
def site(local_cluster, unix_user, slurm_env):
    """The portal's test site, with the secure spawner's own options form on the hub's spawn page."""
    settings = {"JupyterHub.spawner_class": "portal_form_spawner.FormSpawner"}
    yield from portal_site.site(local_cluster, unix_user, slurm_env, settings)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: `securehpc dev install` installs it"
    with sync_playwright() as driver:
        # --no-sandbox: the tests run as root, where chromium's own sandbox refuses to start.
        instance = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture(scope="module")
def people(site, browser) -> Iterator[dict[str, Page]]:
    """Each person's own browser, signed in lazily: ``people(name)`` -> a tab on the portal's start page."""
    tabs: dict[str, Page] = {}

    def sign_in(who: str) -> Page:
        if who not in tabs:
            tab = browser.new_context().new_page()
            tab.set_default_timeout(30_000)
            # The portal sends a person who is not signed in to the hub's login, and back after it.
            tab.goto(site["layout"].hub_url + PORTAL)
            tab.fill("#username_input", who)
            tab.fill("#password_input", "any")  # the test hub's dummy authenticator takes any password
            tab.click("#login_submit")
            try:
                tab.wait_for_url(re.compile(re.escape(site["layout"].hub_url + PORTAL) + r"$"))
            except PlaywrightTimeout:
                raise AssertionError(f"{who} did not reach the portal: {tab.url}\n{tab.inner_text('body')}") from None
            tabs[who] = tab
        return tabs[who]

    try:
        yield sign_in
    finally:
        for tab in tabs.values():
            tab.context.close()


def open_page(site, tab: Page, path: str = ""):
    """Go to a portal page; returns the navigation's response (status, headers)."""
    return tab.goto(site["layout"].hub_url + PORTAL + path)


def row(tab: Page, selector: str, text: str):
    return tab.locator(selector).filter(has_text=text)


# --- my projects, and the way there ---------------------------------------------------------------------------


def test_my_projects_show_role_policy_datasets_and_start(site, people):
    tab = people(OWNER)
    card = tab.locator(".project-card[data-project='alpha']")
    expect(card).to_be_visible()
    expect(card.locator(".role-badge")).to_have_text("data owner")
    expect(card).to_contain_text("up to 1 GPU, 1 CPU, 1 GB memory, 30 min per session")
    expect(card.locator(".datasets")).to_contain_text("alpha/scans")
    expect(card.locator(".sessions")).to_contain_text("No session is running")
    start = card.get_by_role("link", name="Start")
    assert start.get_attribute("href") == f"/hub/spawn/{OWNER}/alpha"
    expect(tab.locator(".project-card")).to_have_count(1)  # beta is not hers
    # The Start button opens the hub's spawn page of the server named after the project.
    with tab.expect_navigation():
        start.click()
    assert tab.url.endswith(f"/hub/spawn/{OWNER}/alpha"), (tab.url, tab.inner_text("body"))
    expect(tab.locator("select#project option[selected]")).to_contain_text("alpha")


def test_the_hub_home_page_links_to_the_portal(site, people):
    tab = people(OBSERVER)
    tab.goto(site["layout"].hub_url + "/hub/home")
    link = tab.locator("#securehpc-portal-link")
    expect(link).to_be_visible()
    link.click()
    tab.wait_for_url(re.compile(re.escape(PORTAL) + "$"))
    expect(tab.locator(".project-card[data-project='alpha'] .role-badge")).to_have_text("observer")


def test_a_page_view_is_one_audit_event_and_its_cards_say_what_the_api_says(site, people):
    """The start page reads all its cards in one ProjectService call: one ``project.list`` event naming the
    person's projects (not a project.show and a session.list per project), and each card shows what the API's
    project and sessions endpoints say (the calls the page made per project before)."""
    added = api(site, "PUT", f"/projects/beta/members/{OWNER}", ADMIN, json={"role": "observer"})
    assert added.status_code == 201, added.text
    try:
        tab = people(OWNER)
        before = len(events(site))
        open_page(site, tab, "")
        (event,) = events(site)[before:]
        assert (event["actor"], event["action"], event["object"], event["outcome"]) == (
            OWNER, "project.list", "projects", "allowed"
        )  # fmt: skip
        assert (event["details"]["projects"], event["details"]["count"]) == (["alpha", "beta"], 2)
        expect(tab.locator(".project-card")).to_have_count(2)
        for name in ("alpha", "beta"):
            card = tab.locator(f".project-card[data-project='{name}']")
            shown = api(site, "GET", f"/projects/{name}", OWNER).json()
            sessions = api(site, "GET", f"/projects/{name}/sessions", OWNER).json()["sessions"]
            role = next(m["role"] for m in shown["members"] if m["user"] == OWNER)
            expect(card.locator(".role-badge")).to_have_text(ROLE_NAMES[role])
            expect(card.locator(".policy-summary")).to_have_text(policy_summary(shown["policy"]))
            datasets = [f"{name}/{d}" for d in shown["datasets"]] + shown["shared_in"]
            assert card.locator(".datasets code").all_inner_texts() == datasets
            assert sessions == []
            members = plural(len(shown["members"]), "member")
            expect(card.locator(".sessions")).to_have_text(f"No session is running. {members}.")
            assert card.get_by_role("link", name="Start").get_attribute("href") == f"/hub/spawn/{OWNER}/{name}"
    finally:
        assert api(site, "DELETE", f"/projects/beta/members/{OWNER}", ADMIN).status_code == 200


def plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("s" if count != 1 else "")


def policy_summary(policy: dict) -> str:
    """A card's policy line, as people read it (pages' _macros.html)."""

    def roles(names: list[str]) -> str:
        return ", ".join(ROLE_NAMES[n] + "s" for n in names) or "nobody"

    return (
        f"partition {policy['partition']} · up to {plural(policy['max_gpus'], 'GPU')}, "
        f"{plural(policy['max_cpus'], 'CPU')}, {policy['max_memory_gb']} GB memory, "
        f"{minutes(policy['max_wall_time'])} per session · terminals {'on' if policy['terminals'] else 'off'} · "
        f"downloads: {roles(policy['download_roles'])} · uploads: {roles(policy['upload_roles'])}"
    )


def test_pages_carry_the_security_headers_and_no_inline_script(site, people):
    tab = people(OWNER)
    for path in ("", "projects/alpha", "projects/alpha/audit"):
        response = open_page(site, tab, path)
        assert response.status == 200, path
        assert response.headers["content-security-policy"] == CSP
        assert response.headers["x-frame-options"] == "DENY"
        html = response.text()
        scripts = re.findall(r"<script[^>]*>", html)
        assert scripts and all(" src=" in tag for tag in scripts), (path, scripts)
        assert " style=" not in html and "javascript:" not in html and " on" + "click=" not in html, path


# --- a project's data owner -----------------------------------------------------------------------------------


def test_data_owner_adds_a_member_and_changes_the_role(site, people):
    tab = people(OWNER)
    open_page(site, tab, "projects/alpha")
    tab.fill("#new-member", "bruno")
    tab.select_option("#new-member-role", "data_scientist")
    tab.locator("#add-member").get_by_role("button", name="Add").click()
    expect(tab.locator("#notice")).to_have_text("bruno is now a member of alpha as data scientist.")
    member = tab.locator("tr.member[data-user='bruno']")
    expect(member.locator(".member-role")).to_have_text("data scientist")

    member.locator("select[name=role]").select_option("observer")
    member.get_by_role("button", name="Change role").click()
    expect(tab.locator("#notice")).to_contain_text("bruno's role in alpha: data scientist -> observer")
    expect(tab.locator("tr.member[data-user='bruno'] .member-role")).to_have_text("observer")

    members = {m["user"]: m["role"] for m in api(site, "GET", "/projects/alpha/members", OWNER).json()["members"]}
    assert members["bruno"] == "observer"
    changes = [e for e in events(site) if e["action"] == "member.add" and e["object"] == "member:alpha/bruno"]
    assert [(e["actor"], e["details"]["role"], e["details"]["via"]) for e in changes] == [
        (OWNER, "data_scientist", "portal"),
        (OWNER, "observer", "portal"),
    ]


def test_bad_input_shows_the_form_again_with_the_reason_and_the_typed_values(site, people):
    tab = people(OWNER)
    open_page(site, tab, "projects/alpha")
    tab.fill("#new-member", "bad user")
    tab.select_option("#new-member-role", "observer")
    tab.locator("#add-member").get_by_role("button", name="Add").click()
    expect(tab.locator(".form-error[data-form='add_member']")).to_contain_text("user name 'bad user' is not valid")
    expect(tab.locator("#new-member")).to_have_value("bad user")
    expect(tab.locator("#new-member-role")).to_have_value("observer")
    # The last data owner cannot make herself an observer: the reason, and nothing changed.
    tab.locator(f"tr.member[data-user='{OWNER}'] select[name=role]").select_option("observer")
    tab.locator(f"tr.member[data-user='{OWNER}']").get_by_role("button", name="Change role").click()
    expect(tab.locator(f".form-error[data-form='role:{OWNER}']")).to_contain_text("last data owner")
    expect(tab.locator(f"tr.member[data-user='{OWNER}'] .member-role")).to_have_text("data owner")


def test_offer_accept_and_revoke_a_share_each_after_a_confirmation(site, people):
    owner = people(OWNER)
    open_page(site, owner, "projects/alpha")
    owner.select_option("#offer-dataset", "scans")
    owner.fill("#offer-with", "beta")
    owner.locator("#offer").get_by_role("button", name="Offer").click()
    expect(owner.locator("#confirm h1")).to_have_text("Offer alpha/scans to beta?")
    assert api(site, "GET", "/projects/alpha/shares", OWNER).json()["offered"] == []  # not before confirming
    owner.click("#confirm-button")
    expect(owner.locator("#notice")).to_contain_text("alpha/scans is offered to beta")
    expect(owner.locator("tr.offered[data-with='beta'] .share-state")).to_have_text("pending")

    # The receiving project's data owner (carol in the demo) accepts it.
    other = people(OTHER_OWNER)
    open_page(site, other, "projects/beta")
    offer = other.locator("tr.received[data-dataset='alpha/scans']")
    expect(offer.locator(".share-state")).to_have_text("pending")
    offer.get_by_role("button", name="Accept").click()
    expect(other.locator("#confirm h1")).to_have_text("Accept alpha/scans into beta?")
    other.click("#confirm-button")
    expect(other.locator("#notice")).to_contain_text("alpha/scans is accepted into beta")
    expect(other.locator("tr.received[data-dataset='alpha/scans'] .share-state")).to_have_text("accepted")
    assert "alpha/scans" in api(site, "GET", "/projects/beta", OTHER_OWNER).json()["shared_in"]

    # Revoking: Cancel on the confirmation page changes nothing; confirming revokes.
    open_page(site, owner, "projects/alpha")
    owner.locator("tr.offered[data-with='beta']").get_by_role("button", name="Revoke").click()
    expect(owner.locator("#confirm h1")).to_have_text("Revoke the share of alpha/scans with beta?")
    owner.click("#cancel")
    expect(owner.locator("tr.offered[data-with='beta'] .share-state")).to_have_text("accepted")
    owner.locator("tr.offered[data-with='beta']").get_by_role("button", name="Revoke").click()
    owner.click("#confirm-button")
    expect(owner.locator("#notice")).to_contain_text("The share of alpha/scans with beta is revoked")
    expect(owner.locator("tr.offered[data-with='beta'] .share-state")).to_have_text("revoked")
    assert api(site, "GET", "/projects/beta", OTHER_OWNER).json()["shared_in"] == []


def test_running_sessions_are_shown_and_a_data_owner_stops_one(site, people):
    scientist = site["scientist"]
    hub_user = f"{site['hub_api']}/users/{scientist}"
    headers = {"Authorization": f"token {site['tokens'][scientist]}"}
    started = requests.post(f"{hub_user}/servers/alpha", headers=headers, json={"gpus": "1"}, timeout=60)
    assert started.status_code in (201, 202), started.text
    deadline = time.monotonic() + 60
    while not (requests.get(hub_user, headers=headers, timeout=30).json()["servers"].get("alpha") or {}).get("ready"):
        assert time.monotonic() < deadline, "the stand-in server did not become ready"
        time.sleep(0.2)
    # The scientist's own card opens the running session instead of starting one.
    mine = people(scientist)
    open_page(site, mine, "")
    card = mine.locator(".project-card[data-project='alpha']")
    assert card.locator(".open-session").get_attribute("href") == f"/user/{scientist}/alpha/"
    expect(card.locator(".sessions")).to_contain_text(f"Running now: {scientist} on securehpc-n1")

    owner = people(OWNER)
    open_page(site, owner, "projects/alpha")
    session = owner.locator(f"tr.session[data-user='{scientist}']")
    expect(session).to_contain_text("running")
    expect(session).to_contain_text("securehpc-n1")
    session.get_by_role("button", name="Stop").click()
    expect(owner.locator("#confirm h1")).to_have_text(f"Stop {scientist}'s session in alpha?")
    owner.click("#confirm-button")
    expect(owner.locator("#notice")).to_have_text(f"{scientist}'s session in alpha is stopping.")
    while requests.get(hub_user, headers=headers, timeout=30).json()["servers"].get("alpha"):
        assert time.monotonic() < deadline + 60, "the server was not stopped"
        time.sleep(0.2)
    (event,) = [e for e in events(site) if e["action"] == "session.stop" and e["outcome"] == "allowed"]
    assert (event["actor"], event["details"]["user"], event["details"]["via"]) == (OWNER, scientist, "portal")


def test_members_read_and_only_data_owners_manage(site, people):
    tab = people(OBSERVER)
    open_page(site, tab, "projects/alpha")
    expect(tab.locator("tr.member[data-user='olivia'] .member-role")).to_have_text("data owner")
    expect(tab.locator("#datasets-table")).to_contain_text("alpha/scans")
    for manage in ("#add-member", ".role-form", ".remove-form", "#offer", "#audit-trail", "#edit-policy"):
        expect(tab.locator(manage)).to_have_count(0)
    # Posting the owner's form anyway is refused (403) and recorded.
    before = len(events(site))
    refused = tab.request.post(site["layout"].hub_url + PORTAL + "projects/alpha/members",
                               form={"user": "eve", "role": "data_owner", "_xsrf": xsrf_of(tab)})  # fmt: skip
    assert refused.status == 403 and "only a data owner may member.add" in refused.text()
    assert any(e["actor"] == OBSERVER and e["outcome"] == "denied" for e in events(site)[before:])
    # Nor is a confirmation page shown to someone who may not take the step.
    before = len(events(site))
    refused = tab.request.post(site["layout"].hub_url + PORTAL + f"projects/alpha/members/{OWNER}/remove",
                               form={"_xsrf": xsrf_of(tab)})  # fmt: skip
    assert refused.status == 403 and "only a data owner may member.remove" in refused.text()
    (event,) = [e for e in events(site)[before:] if e["outcome"] != "allowed"]
    assert (event["actor"], event["action"], event["outcome"]) == (OBSERVER, "member.remove", "denied")


def test_the_project_audit_trail_for_its_data_owner(site, people):
    tab = people(OWNER)
    open_page(site, tab, "projects/alpha")
    tab.click("#audit-trail")
    expect(tab.locator("h1")).to_contain_text("Audit trail of alpha")
    # The observer's refused attempt of the test before is there, newest first.
    refused = row(tab, "tr.audit-event", "member:alpha/eve").first
    expect(refused.locator(".outcome-badge")).to_have_text("denied")
    expect(refused).to_contain_text(OBSERVER)
    projects = {text.strip() for text in tab.locator("tr.audit-event td.audit-object").all_inner_texts()}
    assert projects and all("beta" not in obj or "alpha" in obj for obj in projects)


# --- who may see what -----------------------------------------------------------------------------------------


def test_a_project_one_is_not_in_answers_404_like_one_that_does_not_exist(site, people):
    tab = people(OUTSIDER)
    expect(tab.locator("#no-projects")).to_be_visible()
    before = len(events(site))
    hidden = open_page(site, tab, "projects/alpha")
    hidden_text = tab.inner_text("#error-message")
    missing = open_page(site, tab, "projects/nowhere")
    missing_text = tab.inner_text("#error-message")
    assert hidden.status == missing.status == 404
    assert hidden_text.replace("alpha", "X") == missing_text.replace("nowhere", "X")
    assert "does not exist or you are not one of its members" in hidden_text
    expect(tab.locator("#members")).to_have_count(0)
    assert any(e["actor"] == OUTSIDER and e["object"] == "project:alpha" and e["outcome"] == "denied"
               for e in events(site)[before:])  # fmt: skip
    for path in ("projects/alpha/audit", "projects/beta"):
        assert open_page(site, tab, path).status == 404
    assert open_page(site, tab, "no/such/page").status == 404
    expect(tab.locator("#error-message")).to_have_text(f"There is no page at {PORTAL}no/such/page.")
    assert api(site, "GET", "/no/such/path", OUTSIDER).json()["error"] == "not_found"  # the API's stay JSON


def test_the_admin_pages_answer_403_to_others_and_record_it(site, people):
    tab = people(site["scientist"])
    expect(tab.locator("#nav-admin")).to_have_count(0)
    for path in ("admin", "admin/audit", "admin/projects/alpha/policy"):
        before = len(events(site))
        response = open_page(site, tab, path)
        assert response.status == 403, path
        expect(tab.locator("#error-message")).to_contain_text("only the portal's hub admins")
        (event,) = events(site)[before:]
        assert (event["actor"], event["action"], event["outcome"]) == (site["scientist"], "portal.admin", "denied")


def test_a_form_without_the_xsrf_token_is_refused(site, people):
    tab = people(OWNER)
    open_page(site, tab, "projects/alpha")
    tab.evaluate("document.querySelector('#add-member input[name=_xsrf]').remove()")
    tab.fill("#new-member", "mallory")
    before = len(events(site))
    with tab.expect_navigation() as navigation:
        tab.locator("#add-member").get_by_role("button", name="Add").click()
    assert navigation.value.status == 403
    expect(tab.locator("#error-message")).to_contain_text("XSRF")
    members = {m["user"] for m in api(site, "GET", "/projects/alpha/members", OWNER).json()["members"]}
    assert "mallory" not in members
    (event,) = [e for e in events(site)[before:] if e["actor"] == OWNER and e["outcome"] != "allowed"]
    assert (event["action"], event["outcome"]) == ("portal.xsrf", "denied")


# --- the hub admin --------------------------------------------------------------------------------------------


def spawn_page_limits(site, people) -> str:
    """What the scientist's spawn page of alpha says about the project's limits."""
    tab = people(site["scientist"])
    tab.goto(f"{site['layout'].hub_url}/hub/spawn/{site['scientist']}/alpha")
    return tab.locator("select#project option[value='alpha']").inner_text()


def test_admin_changes_a_policy_after_its_preview_and_the_next_spawn_page_has_it(site, people):
    assert "1 CPU" in spawn_page_limits(site, people)
    tab = people(ADMIN)
    tab.click("#nav-admin")
    expect(tab.locator("tr.project-row")).to_have_count(2)
    tab.locator("tr.project-row[data-project='alpha']").get_by_role("link", name="Policy").click()
    setting = tab.locator("tr.setting[data-setting='max_cpus']")
    expect(setting).to_contain_text("Most CPU cores one session may ask for.")
    expect(setting.locator(".setting-range")).to_contain_text("Allowed: 1 to 1024.")
    tab.fill("#setting-max_cpus", "2")
    tab.fill("#setting-max_wall_time", "2h")
    tab.check("#setting-upload_roles-data_scientist")
    tab.click("#preview-button")

    expect(tab.locator("h1")).to_have_text("Preview: policy of alpha")
    changes = {r.get_attribute("data-setting"): (r.locator(".before").inner_text(), r.locator(".after").inner_text())
               for r in tab.locator("tr.change").all()}  # fmt: skip
    assert changes == {
        "max_cpus": ("1", "2"),
        "max_wall_time": ("30 min", "2 h (120 min)"),
        "upload_roles": ("data owner", "data owner, data scientist"),
    }
    assert api(site, "GET", "/projects/alpha/policy", ADMIN).json()["policy"]["max_cpus"] == 1  # a preview only
    assert "1 CPU" in spawn_page_limits(site, people)

    tab.click("#save-button")
    expect(tab.locator("#notice")).to_contain_text("The policy of alpha is saved: max_cpus 1 -> 2")
    expect(tab.locator("tr.setting[data-setting='max_cpus'] .setting-range")).to_contain_text("In effect: 2.")
    (event,) = [e for e in events(site) if e["action"] == "policy.set" and e["project"] == "alpha"
                and e["actor"] == ADMIN]  # fmt: skip
    assert event["details"]["changed"] == ["max_cpus", "max_wall_time", "upload_roles"]
    assert event["details"]["via"] == "portal"
    # The scientist's next spawn page offers the new limits.
    limits = spawn_page_limits(site, people)
    assert "2 CPU" in limits and "120 min" in limits, limits


def test_the_policy_editor_shows_bad_values_beside_their_field(site, people):
    tab = people(ADMIN)
    open_page(site, tab, "admin/projects/beta/policy")
    tab.fill("#setting-partition", "gpu;rm")
    tab.fill("#setting-max_wall_time", "forever")
    tab.click("#preview-button")
    expect(tab.locator(".setting-error[data-setting='partition']")).to_contain_text("expected a Slurm partition name")
    expect(tab.locator(".setting-error[data-setting='max_wall_time']")).to_contain_text("expected minutes")
    expect(tab.locator("#setting-partition")).to_have_value("gpu;rm")
    expect(tab.locator("#setting-max_wall_time")).to_have_value("forever")
    assert api(site, "GET", "/projects/beta/policy", ADMIN).json()["policy"]["partition"] == "gpu"


def test_a_policy_changed_after_the_preview_is_previewed_again(site, people):
    tab = people(ADMIN)
    open_page(site, tab, "admin/projects/beta/policy")
    tab.fill("#setting-max_gpus", "2")
    tab.click("#preview-button")
    expect(tab.locator("tr.change")).to_have_count(1)
    # Back to the editor: the typed value is still there.
    tab.click("#edit-button")
    expect(tab.locator("#setting-max_gpus")).to_have_value("2")
    tab.click("#preview-button")
    # Another admin (here the API) changes the policy in between.
    assert api(site, "PATCH", "/projects/beta/policy", ADMIN, json={"max_cpus": 3}).status_code == 200
    tab.click("#save-button")
    expect(tab.locator("#preview-warning")).to_contain_text("The policy changed after your preview")
    assert api(site, "GET", "/projects/beta/policy", ADMIN).json()["policy"]["max_gpus"] == 1
    tab.click("#save-button")
    expect(tab.locator("#notice")).to_have_text("The policy of beta is saved: max_gpus 1 -> 2.")
    policy = api(site, "GET", "/projects/beta/policy", ADMIN).json()["policy"]
    assert (policy["max_gpus"], policy["max_cpus"]) == (2, 3)


def test_admin_creates_a_project_and_pages_through_the_verified_audit_log(site, people):
    tab = people(ADMIN)
    open_page(site, tab, "admin")
    tab.fill("#project-name", "bad name")
    tab.fill("#project-owner", OWNER)
    tab.locator("#create").get_by_role("button", name="Create").click()
    expect(tab.locator(".form-error[data-form='create']")).to_contain_text("contains whitespace")
    expect(tab.locator("#project-name")).to_have_value("bad name")
    expect(tab.locator("#project-owner")).to_have_value(OWNER)
    tab.fill("#project-name", "gamma")
    tab.locator("#create").get_by_role("button", name="Create").click()
    expect(tab.locator("#notice")).to_have_text(f"Project gamma is created; {OWNER} is its data owner.")
    expect(tab.locator("tr.member[data-user='olivia'] .member-role")).to_have_text("data owner")

    tab.click("#nav-audit")
    expect(tab.locator("#verify-status")).to_contain_text("The hash chain is intact")
    first = [int(t) for t in tab.locator("tr.audit-event td:first-child").all_inner_texts()]
    assert len(first) == 50 and first == sorted(first, reverse=True)
    tab.click("#older")
    tab.wait_for_url(f"**/admin/audit?before={first[-1]}")
    following = [int(t) for t in tab.locator("tr.audit-event td:first-child").all_inner_texts()]
    assert following and following[0] == first[-1] - 1
    tab.select_option("#filter-outcome", "denied")
    tab.fill("#filter-user", OUTSIDER)
    tab.locator("#audit-filter").get_by_role("button", name="Filter").click()
    tab.wait_for_url("**outcome=denied**")
    outcomes = tab.locator("tr.audit-event .outcome-badge").all_inner_texts()
    assert outcomes and set(outcomes) == {"denied"}
    tab.fill("#filter-project", "../x")
    tab.locator("#audit-filter").get_by_role("button", name="Filter").click()
    expect(tab.locator("#filter-problem")).to_contain_text("project")
    expect(tab.locator("#filter-project")).to_have_value("../x")


def xsrf_of(tab: Page) -> str:
    """The portal's XSRF token (the value of its ``_xsrf`` cookie), as a script of the page would send it."""
    (cookie,) = [c for c in tab.context.cookies() if c["name"] == "_xsrf" and c["path"] == PORTAL]
    return cookie["value"]


def test_the_project_page_lists_headless_runs_with_names_never_values(site, people):
    """A run recorded as the hub records one (nothing goes to Slurm: the hub's side is tests/runs/) shows on the
    project page: who, which notebook, the parameters' names (never their values), how it ended."""
    from jupyter_securehpc.audit import AuditLog
    from jupyter_securehpc.projects.db import open_database
    from jupyter_securehpc.projects.service import Actor, ProjectService
    from jupyter_securehpc.session.parameters import ParametersChange
    from jupyter_securehpc.session.reports import RunEnd

    def service(actor: Actor) -> ProjectService:
        return ProjectService(open_database(f"sqlite:///{site['db']}"), site["keys"], AuditLog(site["audit"]),
                              site["root"] / "stores", actor)  # fmt: skip

    tab = people(OBSERVER)
    open_page(site, tab, "projects/alpha")
    expect(tab.locator("#runs")).to_contain_text("No headless run yet. securehpc run submit alpha NOTEBOOK")

    hub = service(Actor(admin="jupyterhub-runs"))
    # As the scientist's session reports it when JupyterLab saves the notebook (projects/notebooks.py).
    hub.record_notebook_parameters("alpha", site["scientist"], ParametersChange("sweeps/sweep.ipynb", ("canary_name",)))
    person = service(Actor.signed_in(site["scientist"], is_admin=False, via="hub-runs"))
    request = {"project": "alpha", "notebook": "sweeps/sweep.ipynb", "parameters": {"canary_name": 7331}}
    record = person.submit_run(request, report_hash="0" * 64)
    hub.run_submitted(record.run_id, "4243")
    hub.record_run_end(record.run_id, RunEnd("failed", exit_code=1, cell=2, exception="KeyError"))

    open_page(site, tab, "projects/alpha")
    shown = tab.locator(f"tr.run[data-run='{record.run_id}']")
    expect(shown).to_contain_text(site["scientist"])
    expect(shown).to_contain_text("sweeps/sweep.ipynb")
    expect(shown).to_contain_text("canary_name")
    expect(shown.locator(".run-state")).to_contain_text("failed")
    expect(shown.locator(".run-state")).to_contain_text("KeyError")
    assert "7331" not in tab.inner_text("#runs")
