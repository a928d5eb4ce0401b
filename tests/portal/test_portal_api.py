"""The portal's REST API against a real hub and its managed portal service on the local cluster.

One table of every role by every endpoint (like tests/projects/test_authz.py, but over HTTP through the
proxy, the hub's OAuth and the service's own token), refusals recorded in the audit log, bad input of every
kind answered 400 with a message and nothing changed (database and audit log compared), a token without the
portal's scope refused, the XSRF rule for browsers, the sessions read from the hub and stopped through it.
"""

from __future__ import annotations

import json
import time
from urllib.parse import quote

import jsonschema
import portal_site
import pytest
import requests
from portal_site import ADMIN, OBSERVER, OTHER_OWNER, OUTSIDER, OWNER, api, events, state

from jupyter_securehpc.audit import AuditLog
from jupyter_securehpc.projects.db import open_database
from jupyter_securehpc.projects.service import Actor, ProjectService
from jupyter_securehpc.session.parameters import ParametersChange
from jupyter_securehpc.session.reports import RunEnd

SCIENTIST = "scientist"  # stands for the real Unix test user (site["scientist"])
# In this order: the refused first, so that the owner's and the admin's changes come after them.
ROLES = (OUTSIDER, OBSERVER, SCIENTIST, OWNER, ADMIN)
MEMBERS = (OBSERVER, SCIENTIST, OWNER, ADMIN)


@pytest.fixture(scope="module")
def site(local_cluster, unix_user, slurm_env):
    yield from portal_site.site(local_cluster, unix_user, slurm_env)


def person(site, role: str) -> str:
    return site["scientist"] if role == SCIENTIST else role


@pytest.fixture(scope="module")
def session(site):
    """The scientist's server ``alpha``, started through the hub's REST API (a stand-in spawner that keeps a
    Slurm spawner's state: job id and node)."""
    scientist = site["scientist"]
    headers = {"Authorization": f"token {site['tokens'][scientist]}"}
    response = requests.post(f"{site['hub_api']}/users/{scientist}/servers/alpha", headers=headers,
                             json={"gpus": "1", "cpus": "1"}, timeout=60)  # fmt: skip
    assert response.status_code in (201, 202), response.text
    deadline = time.monotonic() + 60
    while True:
        model = requests.get(f"{site['hub_api']}/users/{scientist}", headers=headers, timeout=30).json()
        server = model["servers"].get("alpha") or {}
        if server.get("ready"):
            return server
        assert time.monotonic() < deadline, model
        time.sleep(0.2)


@pytest.fixture(scope="module")
def run(site) -> str:
    """A headless run of the scientist in alpha, recorded as the hub records one (submitted as job 4242, a cell
    done of three, then failed in cell 2 with KeyError); nothing goes to Slurm (the hub's side is tests/runs/)."""

    def service(actor: Actor) -> ProjectService:
        return ProjectService(open_database(f"sqlite:///{site['db']}"), site["keys"], AuditLog(site["audit"]),
                              site["root"] / "stores", actor)  # fmt: skip

    person = service(Actor.signed_in(site["scientist"], is_admin=False, via="hub-runs"))
    hub = service(Actor(admin="jupyterhub-runs"))
    # As the scientist's session reports it when JupyterLab saves the notebook (projects/notebooks.py).
    hub.record_notebook_parameters("alpha", site["scientist"], ParametersChange("sweep.ipynb", names=("secret_value",)))
    record = person.submit_run({"project": "alpha", "notebook": "sweep.ipynb", "parameters": {"secret_value": 7}},
                               report_hash="0" * 64)  # fmt: skip
    hub.run_submitted(record.run_id, "4242")
    hub.record_run_progress(record.run_id, 1, 3)
    hub.record_run_end(record.run_id, RunEnd("failed", exit_code=1, cell=2, exception="KeyError"))
    return record.run_id


# --- the table ---------------------------------------------------------------------------------------------
# (method, path, body, {role: status}); "{me}" in a path or body is the acting person (unique names per role).
# Rows run in this order for each role; rows with a fixed "as" person prepare the next row whoever acts.
EVERYONE_OK = dict.fromkeys(ROLES, 200)
MEMBERS_OK = {**dict.fromkeys(MEMBERS, 200), OUTSIDER: 404}
OWNER_ACTS = {OUTSIDER: 404, OBSERVER: 403, SCIENTIST: 403, OWNER: 200, ADMIN: 200}
ADMIN_ACTS = {OUTSIDER: 404, OBSERVER: 403, SCIENTIST: 403, OWNER: 403, ADMIN: 200}
ADMIN_ONLY = {**dict.fromkeys(ROLES, 403), ADMIN: 200}

TABLE = [
    ("GET", "/me", None, EVERYONE_OK),
    ("GET", "/policy-settings", None, EVERYONE_OK),
    ("GET", "/projects", None, EVERYONE_OK),
    ("POST", "/projects", {"name": "made-by-{me}", "owner": OWNER}, {**dict.fromkeys(ROLES, 403), ADMIN: 201}),
    ("GET", "/projects/alpha", None, MEMBERS_OK),
    ("GET", "/projects/alpha/members", None, MEMBERS_OK),
    ("PUT", "/projects/alpha/members/new-{me}", {"role": "observer"}, {**OWNER_ACTS, OWNER: 201, ADMIN: 201}),
    ("PUT", "/projects/alpha/members/new-{me}", {"role": "data_scientist"}, OWNER_ACTS),
    ("DELETE", "/projects/alpha/members/new-{me}", None, OWNER_ACTS),
    ("GET", "/projects/alpha/datasets", None, MEMBERS_OK),
    ("GET", "/projects/alpha/shares", None, MEMBERS_OK),
    ("GET", "/projects/alpha/shares?state=pending", None, MEMBERS_OK),
    ("POST", "/projects/alpha/shares", {"dataset": "scans", "with": "beta"}, {**OWNER_ACTS, OWNER: 201, ADMIN: 201}),
    ("DELETE", "/projects/alpha/shares/scans/beta", None, OWNER_ACTS),
    ("as", OTHER_OWNER, ("POST", "/projects/beta/shares", {"dataset": "ecg", "with": "alpha"}), 201),
    ("POST", "/projects/alpha/received/beta/ecg/accept", None, OWNER_ACTS),
    ("as", OTHER_OWNER, ("DELETE", "/projects/beta/shares/ecg/alpha", None), 200),
    ("GET", "/projects/alpha/policy", None, MEMBERS_OK),
    ("PATCH", "/projects/alpha/policy", {"max_gpus": 1, "terminals": False}, ADMIN_ACTS),
    ("POST", "/projects/alpha/policy/preview", {"max_gpus": 2}, ADMIN_ACTS),
    ("GET", "/projects/alpha/sessions", None, MEMBERS_OK),
    # The owner stops the scientist's running session; the admin, allowed too, finds none left to stop.
    ("DELETE", "/projects/alpha/sessions/{scientist}", None, {**OWNER_ACTS, OWNER: 202, ADMIN: 404}),
    ("GET", "/projects/alpha/runs", None, MEMBERS_OK),
    ("GET", "/projects/alpha/runs/{run}", None, MEMBERS_OK),
    ("GET", "/audit", None, ADMIN_ONLY),
    ("GET", "/audit?project=alpha", None, {**OWNER_ACTS, OUTSIDER: 404}),
    ("GET", "/audit?project=alpha&outcome=denied&limit=5", None, {**OWNER_ACTS, OUTSIDER: 404}),
    ("GET", "/audit/verify", None, ADMIN_ONLY),
]


def test_sessions_show_user_node_job_and_gpus(site, session):
    """(Before the table, whose owner row stops the session.)"""
    (listed,) = api(site, "GET", "/projects/alpha/sessions", OBSERVER).json()["sessions"]
    assert listed["user"] == site["scientist"] and listed["job_id"].isdigit() and listed["job_state"] == "RUNNING"
    assert listed["gpus"] == 1 and listed["cpus"] == 1 and listed["node"] == "securehpc-n1" and listed["ready"] is True
    assert listed["started"] == session["started"]
    assert "not-shown" not in json.dumps(listed)  # of the spawner's state, only the job id and node
    assert api(site, "GET", "/projects/beta/sessions", OTHER_OWNER).json()["sessions"] == []


def test_the_table_covers_every_route():
    from jupyter_securehpc.portal.api import ROUTES

    covered = {(method, path.split("?")[0]) for method, path, *_ in (row for row in TABLE if row[0] != "as")}
    templates = {
        (method, template)
        for template, handler in ROUTES
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE")
        if method.lower() in vars(handler)
    }

    def matches(template: str, path: str) -> bool:
        parts, pieces = template.split("/"), path.split("/")
        return len(parts) == len(pieces) and all(
            p == q or p.startswith("{") for p, q in zip(parts, pieces, strict=True)
        )

    missing = [
        (m, t)
        for m, t in templates
        if t != "/openapi.json" and not any(m == cm and matches(t, cp) for cm, cp in covered)
    ]
    assert not missing, f"routes without a row in the table: {missing}"


def fill(text: str, site, who: str) -> str:
    return text.replace("{me}", who).replace("{scientist}", site["scientist"]).replace("{run}", site.get("run", ""))


def test_role_by_endpoint(site, session, run):
    """Every role against every endpoint, through the proxy with the person's own API token."""
    mismatches = []
    site["run"] = run
    for role in ROLES:
        who = person(site, role)
        for row in TABLE:
            if row[0] == "as":
                _, actor, (method, path, body), expected = row
                response = api(site, method, path, actor, json=body)
                assert response.status_code == expected, f"setup {method} {path} as {actor}: {response.text}"
                continue
            method, path, body, by_role = row
            path = fill(path, site, who)
            data = json.loads(fill(json.dumps(body), site, who)) if body is not None else None
            before = len(events(site))
            response = api(site, method, path, who, json=data)
            status = response.status_code
            if status != by_role[role]:
                mismatches.append(
                    f"{role:>14} {method} {path}: {status} (expected {by_role[role]}) {response.text[:200]}"
                )
                continue
            assert response.headers["Content-Type"].startswith("application/json")
            if status >= 400:
                answer = response.json()
                assert set(answer) == {"error", "message"} and answer["message"], answer
                # Every refusal is in the audit log, as the person's.
                new = events(site)[before:]
                assert any(e["actor"] == who and e["outcome"] in ("denied", "failed") for e in new), (method, path, new)
    assert not mismatches, "\n".join(mismatches)


def test_a_project_you_are_not_in_looks_like_one_that_does_not_exist(site):
    hidden = api(site, "GET", "/projects/alpha", OUTSIDER)
    missing = api(site, "GET", "/projects/nowhere", OUTSIDER)
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["message"].replace("alpha", "X") == missing.json()["message"].replace("nowhere", "X")
    names = [p["name"] for p in api(site, "GET", "/projects", OUTSIDER).json()["projects"]]
    assert names == []
    assert {p["name"] for p in api(site, "GET", "/projects", ADMIN).json()["projects"]} >= {"alpha", "beta"}


def test_runs_show_state_progress_times_and_the_failing_cell_never_outputs_or_values(site, run):
    [listed] = api(site, "GET", "/projects/alpha/runs", OBSERVER).json()["runs"]
    shown = api(site, "GET", f"/projects/alpha/runs/{run}", OBSERVER).json()
    assert listed == shown
    assert shown["run_id"] == run and shown["project"] == "alpha" and shown["user"] == site["scientist"]
    assert (shown["state"], shown["job_id"], shown["cells_done"], shown["cells_total"]) == ("failed", "4242", 1, 3)
    assert (shown["failed_cell"], shown["exception"]) == (2, "KeyError")
    assert shown["created_at"] and shown["submitted_at"] and shown["started_at"] and shown["ended_at"]
    # Parameter names, never their values (not even to the one who submitted them: the hub's API shows those).
    mine = api(site, "GET", f"/projects/alpha/runs/{run}", site["scientist"]).json()
    for answer in (shown, mine):
        assert answer["parameter_names"] == ["secret_value"] and "parameters" not in answer and "messages" not in answer
    assert api(site, "GET", "/projects/beta/runs", OTHER_OWNER).json() == {"project": "beta", "runs": []}
    # As the OpenAPI document says (the fuzz run sees no run rows).
    document = api(site, "GET", "/openapi.json", OBSERVER).json()
    jsonschema.Draft202012Validator(document["components"]["schemas"]["Run"]).validate(shown)


def test_an_unknown_run_or_one_of_another_project_is_404(site, run):
    cases = [
        ("/projects/alpha/runs/0123456789ab", OWNER, "there is no run '0123456789ab'"),
        # A run of alpha asked for under beta: by beta's owner (not in alpha) and by an admin (who may read it).
        (f"/projects/beta/runs/{run}", OTHER_OWNER, f"there is no run {run!r}"),
        (f"/projects/beta/runs/{run}", ADMIN, f"there is no run {run!r} in project 'beta'"),
        ("/projects/nowhere/runs", OWNER, "project 'nowhere' does not exist"),
        (f"/projects/alpha/runs/{run}", OUTSIDER, f"there is no run {run!r}"),
    ]
    for path, who, says in cases:
        before = len(events(site))
        response = api(site, "GET", path, who)
        assert response.status_code == 404 and says in response.json()["message"], (path, who, response.text)
        if who != ADMIN:
            assert any(e["actor"] == who and e["outcome"] in ("denied", "failed") for e in events(site)[before:])


def test_policy_change_is_recorded_with_before_and_after(site):
    before = api(site, "GET", "/projects/beta/policy", ADMIN).json()["policy"]
    preview = api(site, "POST", "/projects/beta/policy/preview", ADMIN, json={"max_gpus": before["max_gpus"] + 1})
    assert preview.status_code == 200 and preview.json()["changed"] == ["max_gpus"]
    assert api(site, "GET", "/projects/beta/policy", ADMIN).json()["policy"] == before  # a preview changes nothing
    response = api(site, "PATCH", "/projects/beta/policy", ADMIN, json={"max_wall_time": "2h", "upload_roles": []})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["policy"]["max_wall_time"] == 120 and result["policy"]["upload_roles"] == []
    assert result["previous"] == before and result["changed"] == ["max_wall_time", "upload_roles"]
    (event,) = [e for e in events(site) if e["action"] == "policy.set" and e["project"] == "beta"]
    assert event["actor"] == ADMIN and event["details"]["via"] == "portal"
    assert event["details"]["previous"] == before and event["details"]["policy"] == result["policy"]


def test_audit_filters_and_paging(site):
    first = api(site, "GET", "/audit?limit=2", ADMIN).json()
    assert len(first["events"]) == 2 and first["events"][0]["seq"] > first["events"][1]["seq"]
    following = api(site, "GET", f"/audit?limit=2&before={first['next']}", ADMIN).json()
    assert following["events"][0]["seq"] == first["events"][1]["seq"] - 1
    denied = api(site, "GET", f"/audit?outcome=denied&user={OUTSIDER}", ADMIN).json()["events"]
    assert denied and all(e["outcome"] == "denied" and OUTSIDER in (e["actor"], e["on_behalf_of"]) for e in denied)
    since = api(
        site, "GET", f"/audit?since={quote('2000-01-01T00:00:00Z')}&until={quote('2001-01-01T00:00:00Z')}", ADMIN
    )
    assert since.status_code == 200 and since.json() == {"events": [], "next": None}
    own = api(site, "GET", "/audit?project=beta", OTHER_OWNER).json()["events"]
    assert own and all(e["project"] == "beta" for e in own)
    verify = api(site, "GET", "/audit/verify", ADMIN).json()
    assert verify["ok"] is True and verify["problem"] is None
    assert verify["head"]["seq"] >= verify["events"] - 5 and len(verify["head"]["hash"]) == 64


# --- bad input: 400 with a message, and nothing changes -----------------------------------------------------
LONG = "a" * 65
BAD = [
    ("GET", "/projects/bad%20name", None),
    ("GET", f"/projects/{LONG}", None),
    ("GET", "/projects/a..b", None),
    ("GET", "/projects/.hidden", None),
    ("GET", "/projects/" + quote("e\u0301"), None),  # not NFC
    ("GET", "/projects/a%00b/members", None),
    ("PUT", "/projects/alpha/members/bad%20user", {"role": "observer"}),
    ("PUT", "/projects/alpha/members/newbie", {"role": "superuser"}),
    ("PUT", "/projects/alpha/members/newbie", {"role": 3}),
    ("PUT", "/projects/alpha/members/newbie", {}),
    ("PUT", "/projects/alpha/members/newbie", {"role": "observer", "admin": True}),
    ("PUT", "/projects/alpha/members/newbie", "not json"),
    ("PUT", "/projects/alpha/members/newbie", ["observer"]),
    ("POST", "/projects", {"name": "x y", "owner": OWNER}),
    ("POST", "/projects", {"name": "ok", "owner": "bad owner"}),
    ("POST", "/projects", {"name": "ok"}),
    ("POST", "/projects/alpha/shares", {"dataset": "../x", "with": "beta"}),
    ("POST", "/projects/alpha/shares", {"dataset": "scans", "with": "alpha"}),
    ("POST", "/projects/alpha/shares", {"dataset": "scans", "with": 7}),
    ("GET", "/projects/alpha/shares?state=maybe", None),
    ("GET", "/projects/alpha/shares?colour=red", None),
    ("PATCH", "/projects/alpha/policy", {}),
    ("PATCH", "/projects/alpha/policy", {"max_gpus": 65}),
    ("PATCH", "/projects/alpha/policy", {"max_gpus": "2"}),
    ("PATCH", "/projects/alpha/policy", {"max_gpus": True}),
    ("PATCH", "/projects/alpha/policy", {"terminals": "yes"}),
    ("PATCH", "/projects/alpha/policy", {"download_roles": ["root"]}),
    ("PATCH", "/projects/alpha/policy", {"download_roles": "data_owner"}),
    ("PATCH", "/projects/alpha/policy", {"partition": "gpu;rm -rf"}),
    ("PATCH", "/projects/alpha/policy", {"max_wall_time": "forever"}),
    ("PATCH", "/projects/alpha/policy", {"no_such_setting": 1}),
    ("POST", "/projects/alpha/policy/preview", {"key_ttl": 5}),
    ("GET", "/audit?limit=0", None),
    ("GET", "/audit?limit=abc", None),
    ("GET", "/audit?since=yesterday", None),
    ("GET", "/audit?since=2026-01-01T00:00:00", None),
    ("GET", "/audit?outcome=maybe", None),
    ("GET", "/audit?user=a%20b", None),
    ("GET", "/audit?limit=1&limit=2", None),
    ("GET", "/audit/verify?x=1", None),
    ("DELETE", "/projects/alpha/sessions/bad%20user", None),
    ("GET", "/projects/alpha/runs/NOT_A_RUN", None),
    ("GET", "/projects/alpha/runs?state=failed", None),
    ("GET", "/projects/bad%20name/runs", None),
]


@pytest.mark.parametrize(("method", "path", "body"), BAD, ids=[f"{m} {p} {b!r}"[:70] for m, p, b in BAD])
@pytest.mark.parametrize("who", [ADMIN, OWNER])
def test_bad_input_is_answered_400_and_changes_nothing(site, method, path, body, who):
    before = state(site)
    if isinstance(body, str):
        response = api(site, method, path, who, data=body, headers={"Content-Type": "application/json"})
    else:
        response = api(site, method, path, who, json=body)
    assert response.status_code == 400, response.text
    answer = response.json()
    assert answer["error"] == "bad_request" and len(answer["message"]) > 10, answer
    assert state(site) == before


def test_a_body_that_is_not_declared_json_is_refused(site):
    response = api(site, "PUT", "/projects/alpha/members/newbie", OWNER, data="role=observer",
                   headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert response.status_code == 400 and "application/json" in response.json()["message"]


# --- who gets in at all --------------------------------------------------------------------------------------


def test_an_unknown_api_path_is_a_json_404(site):
    response = api(site, "GET", "/nothing/here", OWNER)
    assert response.status_code == 404 and response.json()["error"] == "not_found"
    assert api(site, "GET", "/nothing/here").status_code == 403


def test_no_token_no_entry(site):
    before = state(site)
    for method, path in (("GET", "/projects"), ("POST", "/projects"), ("GET", "/audit")):
        response = api(site, method, path)
        assert response.status_code == 403 and response.json()["error"] == "not_authenticated"
    assert api(site, "GET", "/projects", token="not-a-token").status_code == 403
    assert state(site) == before  # nobody to record


def test_a_token_without_the_portal_scope_is_refused_and_recorded(site):
    response = requests.post(
        f"{site['hub_api']}/users/{OUTSIDER}/tokens",
        headers={"Authorization": f"token {site['tokens'][OUTSIDER]}"},
        json={"note": "no portal", "scopes": [f"read:users!user={OUTSIDER}"], "expires_in": 600},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    narrow = response.json()["token"]
    before = len(events(site))
    refused = api(site, "GET", "/me", token=narrow)
    assert refused.status_code == 403 and "access:services!service=securehpc" in refused.json()["message"]
    (event,) = events(site)[before:]
    assert (event["actor"], event["action"], event["outcome"]) == (OUTSIDER, "portal.access", "denied")
    assert api(site, "GET", "/me", OUTSIDER).status_code == 200  # the person's full token still works


def test_responses_carry_the_security_headers(site):
    response = api(site, "GET", "/me", OWNER)
    assert (
        response.headers["Content-Security-Policy"]
        == "default-src 'self'; script-src 'self'; img-src 'self' data:; frame-ancestors 'none'"
    )
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"


def test_a_browser_needs_the_xsrf_token_for_changes(site):
    """Signed in through the hub's OAuth (cookie): reads work, a change without the XSRF token is refused and
    recorded, the same change with it goes through."""
    hub_url = site["layout"].hub_url
    browser = requests.Session()
    browser.get(f"{hub_url}/hub/login", timeout=30)
    login = browser.post(f"{hub_url}/hub/login", data={"username": ADMIN, "password": "any",
                                                       "_xsrf": browser.cookies.get("_xsrf", path="/hub/")},
                         timeout=30)  # fmt: skip
    assert login.status_code == 200, login.text[:500]
    signed_in = browser.get(f"{hub_url}/services/securehpc/sign-in?next=/services/securehpc/api/v1/me", timeout=30)
    assert signed_in.status_code == 200 and signed_in.json() == {"name": ADMIN, "admin": True}, signed_in.text[:500]
    xsrf = browser.cookies.get("_xsrf", path="/services/securehpc/")
    assert xsrf
    preview = f"{site['base']}/projects/alpha/policy/preview"
    before = len(events(site))
    refused = browser.post(preview, json={"max_gpus": 2}, timeout=30)
    assert refused.status_code == 403 and refused.json()["error"] == "xsrf", refused.text
    (event,) = events(site)[before:]
    assert (event["actor"], event["action"], event["outcome"]) == (ADMIN, "portal.xsrf", "denied")
    wrong = browser.post(preview, json={"max_gpus": 2}, headers={"X-XSRFToken": "forged"}, timeout=30)
    assert wrong.status_code == 403
    allowed = browser.post(preview, json={"max_gpus": 2}, headers={"X-XSRFToken": xsrf}, timeout=30)
    assert allowed.status_code == 200, allowed.text
    # Tokens in the Authorization header need no XSRF token (scripts), as in JupyterHub's own API.
    assert api(site, "POST", "/projects/alpha/policy/preview", ADMIN, json={"max_gpus": 2}).status_code == 200


def test_the_portal_holds_no_key_reading_token(site):
    """The portal's OpenBao token (the devcluster makes it with KeyStore.portal_policy) cannot read any key."""
    from jupyter_securehpc.devcluster import portal
    from jupyter_securehpc.keys import KeyStore, KeyStoreConfig, KeyStoreError

    token = portal.token_file(site["layout"]).read_text().strip()
    keys = KeyStore(KeyStoreConfig(url=site["layout"].openbao_addr, token=token, prefix=site["prefix"],
                                   policy_prefix=f"{site['prefix']}-p-"))  # fmt: skip
    for read in (lambda: keys.read_workspace_key("alpha"), lambda: keys.read_dataset_key("alpha", "scans")):
        with pytest.raises(KeyStoreError, match="denied"):
            read()
    with pytest.raises(KeyStoreError):
        keys.delete_project_key("beta")
    assert site["keys"].read_workspace_key("beta")  # still there
