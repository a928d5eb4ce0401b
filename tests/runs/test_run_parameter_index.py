"""The notebook parameter index end to end: a real hub with the secure spawner and its runs API, the local Slurm,
OpenBao, gocryptfs and bubblewrap, the test user signed in through the OpenID provider with an API token.

Notebooks are saved, renamed and deleted in sleep's encrypted workspace through the contents API of a real
JupyterLab session, as JupyterLab does it; the session's launcher reports their parameter names and the hub
records them in the projects database. Runs with an unknown name, or for a notebook the index does not know, are
refused in one line before anything reaches Slurm; the runner checks the names once more when the job starts. A
session whose user is an observer by now cannot change the index. The site (tests/e2e_hub.py): the user is a data
scientist in sleep and in other.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest
import requests
from e2e_hub import diagnostics, start, stop, wait_ready
from notebooks import contents, write_notebook
from notebooks import notebook as _notebook

from jupyter_securehpc.projects.service import ProjectService
from jupyter_securehpc.session.parameters import ParametersChange

pytestmark = [pytest.mark.slurm, pytest.mark.openbao, pytest.mark.sandbox]
CANARY = "CANARY-default-value-7d1e"


def notebook(parameters: str) -> dict:
    return _notebook("print(alpha)", parameters=parameters)


def session(e2e, token: str, project: str) -> str:
    response = start(e2e, token, project, {"gpus": "0"})
    assert response.status_code in (201, 202), response.text
    wait_ready(e2e, token, project)
    return f"{e2e['layout'].hub_url}/user/{e2e['user'].name}/{project}"


def indexed(e2e, project: str, path: str) -> dict | None:
    service: ProjectService = e2e["service"]
    return service.notebook_parameters(project, path)


def wait_indexed(e2e, project: str, path: str, names: list[str] | None, timeout: float = 60) -> dict | None:
    """The index entry once it is ``names`` (None: gone); the launcher posts each second."""
    deadline = time.monotonic() + timeout
    while True:
        found = indexed(e2e, project, path)
        if (found["names"] if found else None) == names:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{project}:{path} is {found}, not {names}\n{diagnostics(e2e)}")
        time.sleep(0.5)


def events(e2e) -> list[dict]:
    return [json.loads(line) for line in (e2e["root"] / "audit.jsonl").read_text().splitlines()]


def wait_event(e2e, match, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [event for event in events(e2e) if match(event)]
        if found:
            return found[-1]
        time.sleep(0.5)
    raise AssertionError(f"no such audit event\n{diagnostics(e2e)}")


def all_jobs(e2e) -> str:
    return subprocess.run(["squeue", "--noheader", "--states=all", "--format=%i %k"], env=e2e["slurm_env"],
                          capture_output=True, text=True, timeout=30, check=True).stdout  # fmt: skip


def submit(e2e, token: str, body: dict) -> requests.Response:
    return requests.post(f"{e2e['layout'].hub_url}/hub/api/securehpc/runs", json=body,
                         headers={"Authorization": f"token {token}"}, timeout=120)  # fmt: skip


@pytest.fixture(scope="module")
def saved(e2e, token):
    """sweep.ipynb saved in a session of sleep; the session is kept for the rename and delete test."""
    base = session(e2e, token, "sleep")
    try:
        answer = write_notebook(base, token, "analysis/sweep.ipynb",
                                notebook(f'alpha = 0.5\nsubjects = ["{CANARY}"]\nlabel = "x"'))  # fmt: skip
        assert answer.status_code == 200, answer.text
        yield base
    finally:
        stop(e2e, token, "sleep")


def test_a_notebook_saved_in_a_session_has_its_names_in_the_hubs_database(e2e, saved):
    entry = wait_indexed(e2e, "sleep", "analysis/sweep.ipynb", ["alpha", "subjects", "label"])
    assert entry["reported_by"] == e2e["user"].name
    recorded = [e for e in events(e2e) if e["action"] == "notebook.parameters" and e["outcome"] == "allowed"]
    assert recorded and recorded[-1]["project"] == "sleep" and recorded[-1]["details"]["user"] == e2e["user"].name
    # Names, never values: the default value is in no event, and not in the database file.
    assert CANARY not in (e2e["root"] / "audit.jsonl").read_text()
    assert CANARY.encode() not in (e2e["root"] / "securehpc.sqlite").read_bytes()


def test_an_unknown_name_is_refused_before_anything_reaches_slurm(e2e, token, saved):
    wait_indexed(e2e, "sleep", "analysis/sweep.ipynb", ["alpha", "subjects", "label"])
    jobs = all_jobs(e2e)
    answer = submit(e2e, token, {"project": "sleep", "notebook": "analysis/sweep.ipynb",
                                 "parameters": {"alpha": 1, "betaa": 2}})  # fmt: skip
    assert answer.status_code == 400, answer.text
    message = answer.json()["message"]
    assert "\n" not in message
    assert message.startswith("unknown parameter betaa for sleep's analysis/sweep.ipynb: its parameters cell defines "
                              "alpha, subjects, label (as saved in JupyterLab on "), message  # fmt: skip
    assert message.endswith("UTC); nothing was submitted"), message
    assert all_jobs(e2e) == jobs
    event = events(e2e)[-1]
    assert (event["actor"], event["action"], event["outcome"]) == (e2e["user"].name, "run.submit", "denied")
    assert "betaa" in event["reason"]


def test_a_notebook_never_saved_in_a_session_is_refused_with_parameters(e2e, token, saved):
    jobs = all_jobs(e2e)
    answer = submit(e2e, token, {"project": "sleep", "notebook": "elsewhere/old.ipynb", "parameters": {"alpha": 1}})
    assert answer.status_code == 403, answer.text
    assert answer.json()["message"] == (
        "the hub does not know the parameters cell of sleep's elsewhere/old.ipynb: open the notebook in a JupyterLab "
        "session of sleep and save it once (the session tells the hub its parameter names), or run it without "
        "parameters; nothing was submitted"
    )
    assert all_jobs(e2e) == jobs
    assert events(e2e)[-1]["outcome"] == "denied"


def test_the_runner_checks_the_names_again_when_the_job_starts(e2e, token, saved):
    """A notebook changed outside JupyterLab's saves (a kernel or a terminal wrote it) has names the index does not
    have: stood in for by an entry with one name more than the cell. The hub submits; the runner refuses in the
    sandbox before any kernel starts."""
    stale = ParametersChange("analysis/sweep.ipynb", names=("alpha", "subjects", "label", "ghost"))
    e2e["service"].record_notebook_parameters("sleep", e2e["user"].name, stale)
    answer = submit(e2e, token, {"project": "sleep", "notebook": "analysis/sweep.ipynb", "parameters": {"ghost": 1}})
    assert answer.status_code == 201, answer.text
    run_id = answer.json()["run_id"]
    deadline = time.monotonic() + 240
    while True:
        run = requests.get(f"{e2e['layout'].hub_url}/hub/api/securehpc/runs/{run_id}", timeout=60,
                           headers={"Authorization": f"token {token}"}).json()  # fmt: skip
        if run["state"] not in ("submitting", "queued", "running", "unknown"):
            break
        assert time.monotonic() < deadline, f"{run}\n{diagnostics(e2e)}"
        time.sleep(1)
    assert run["state"] == "failed" and run["cells_done"] is None, run
    # In the cell's order, as the hub lists them.
    assert run["reason"] == ("unknown parameter ghost: the notebook's parameters cell defines alpha, subjects, label; "
                             "nothing was executed"), run  # fmt: skip
    # The index learns the truth again at the notebook's next save in JupyterLab.
    body = {"type": "notebook", "format": "json", "content": notebook('alpha = 0.5\nsubjects = []\nlabel = "y"')}
    assert contents(saved, token, "PUT", "analysis/sweep.ipynb", json=body).status_code == 200
    wait_indexed(e2e, "sleep", "analysis/sweep.ipynb", ["alpha", "subjects", "label"])


def test_renames_and_deletes_in_the_session_update_the_index(e2e, token, saved):
    base = saved
    wait_indexed(e2e, "sleep", "analysis/sweep.ipynb", ["alpha", "subjects", "label"])
    moved = contents(base, token, "PATCH", "analysis", json={"path": "work"})
    assert moved.status_code == 200, moved.text
    wait_indexed(e2e, "sleep", "work/sweep.ipynb", ["alpha", "subjects", "label"])
    assert indexed(e2e, "sleep", "analysis/sweep.ipynb") is None
    gone = contents(base, token, "DELETE", "work/sweep.ipynb")
    assert gone.status_code == 204, gone.text
    wait_indexed(e2e, "sleep", "work/sweep.ipynb", None)


def test_a_session_whose_user_is_an_observer_now_cannot_change_the_index(e2e, token):
    """The session started as a data scientist (its server still saves); the hub asks the database's role at
    each report: the save is refused there, audited, and the index keeps what it had."""
    user, service = e2e["user"].name, e2e["service"]
    base = session(e2e, token, "other")
    try:
        answer = write_notebook(base, token, "sweep.ipynb", notebook("alpha = 1"))
        assert answer.status_code == 200, answer.text
        wait_indexed(e2e, "other", "sweep.ipynb", ["alpha"])
        service.add_member("other", user, "observer")
        try:
            body = {"type": "notebook", "format": "json", "content": notebook("evil = 1")}
            assert contents(base, token, "PUT", "sweep.ipynb", json=body).status_code == 200
            refused = wait_event(e2e, lambda e: e["action"] == "notebook.parameters" and e["outcome"] == "denied"
                                 and e["project"] == "other")  # fmt: skip
            assert refused["details"]["user"] == user and "observer may not workspace.write" in refused["reason"]
        finally:
            service.add_member("other", user, "data_scientist")
        assert indexed(e2e, "other", "sweep.ipynb")["names"] == ["alpha"]
    finally:
        stop(e2e, token, "other")


def test_a_malformed_report_with_the_sessions_own_secret_is_refused_and_audited(e2e, token):
    """What a launcher would post if it passed anything on: the hub's parser refuses it (400) and audits it.
    The report secret exists only in the job's environment; the hub refuses every other credential first."""
    user = e2e["user"].name
    url = f"{e2e['layout'].hub_url}/hub/api/securehpc/servers/{user}/sleep/parameters"
    answer = requests.post(url, data=json.dumps({"saved": "a.ipynb", "names": ["x"]}), timeout=30,
                           headers={"Authorization": f"token {token}"})  # fmt: skip
    assert answer.status_code == 403
    event = events(e2e)[-1]
    assert (event["action"], event["outcome"]) == ("session.parameters", "denied")
