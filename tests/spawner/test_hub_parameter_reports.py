"""The hub's ``parameters`` report endpoint against a real JupyterHub, posted as a session's launcher would with its
own report secret (the fake launcher of test_hub_reports.py hands it to the test): a valid change is recorded for
the server's project and user; a malformed, oversized or other-project report is refused (400) and audited, and a
post without the server's secret is refused (403) and audited before anything is parsed."""

from __future__ import annotations

import sqlite3

import pytest
import test_hub_reports as hub_reports

from jupyter_securehpc.session.parameters import MAX_PARAMETERS_BODY

pytestmark = [pytest.mark.slurm, pytest.mark.openbao]
# The real hub with the secure spawner and its two started servers, whose launcher is the test.
site = hub_reports.site
sessions = hub_reports.sessions
events = hub_reports.events


def index(site) -> list[tuple]:
    database = sqlite3.connect(site["root"] / "securehpc.sqlite")
    try:
        return database.execute(
            "SELECT projects.name, path, names, reported_by FROM notebook_parameters "
            "JOIN projects ON projects.id = notebook_parameters.project_id ORDER BY path"
        ).fetchall()
    finally:
        database.close()


def test_a_save_is_recorded_for_the_servers_project_and_user(site, sessions):
    response = sessions["sleep"].post("parameters", {"saved": "analysis/sweep.ipynb", "names": ["alpha", "beta"]})
    assert response.status_code == 204, response.text
    assert ("sleep", "analysis/sweep.ipynb", '["alpha", "beta"]', site["user"]) in index(site)
    (recorded,) = events(site, action="notebook.parameters", outcome="allowed", project="sleep")
    assert recorded["details"]["user"] == site["user"] and recorded["details"]["names"] == 2
    # The other server's secret reports for its own project only.
    response = sessions["other"].post("parameters", {"saved": "analysis/sweep.ipynb", "names": ["gamma"]})
    assert response.status_code == 204, response.text
    assert ("other", "analysis/sweep.ipynb", '["gamma"]', site["user"]) in index(site)
    assert ("sleep", "analysis/sweep.ipynb", '["alpha", "beta"]', site["user"]) in index(site)


@pytest.mark.parametrize(
    ("body", "says", "source"),
    [
        ({"saved": "a.ipynb", "names": ["os.system('x')"]}, "Python identifiers", "10.0.9.1"),
        ({"saved": "a.ipynb", "names": ["a"], "project": "other"}, "must be exactly", "10.0.9.2"),
        ({"saved": "a.ipynb", "names": [], "values": {"a": 1}}, "must be exactly", "10.0.9.3"),
        ({"saved": "../../x.ipynb", "names": []}, "'..'", "10.0.9.4"),
        ({"deleted": "a" * (MAX_PARAMETERS_BODY + 10)}, "longer than", "10.0.9.5"),
    ],
)
def test_a_malformed_or_oversized_report_is_refused_and_audited(site, sessions, body, says, source):
    before = index(site)
    response = sessions["sleep"].post("parameters", body, source=source)
    assert response.status_code == 400, response.text
    (refusal,) = events(site, action="session.parameters", remote_ip=source)
    assert refusal["outcome"] == "denied" and says in refusal["reason"] and refusal["actor"] == site["user"]
    assert index(site) == before


def test_a_report_without_the_servers_secret_is_refused_and_audited(site, sessions):
    before = index(site)
    body = {"saved": "analysis/sweep.ipynb", "names": ["evil"]}
    assert sessions["sleep"].post("parameters", body, secret=False, source="10.0.9.6").status_code == 403
    assert sessions["sleep"].post("parameters", body, secret=sessions["other"].secret,
                                  source="10.0.9.7").status_code == 403  # fmt: skip
    for source in ("10.0.9.6", "10.0.9.7"):
        (refusal,) = events(site, action="session.parameters", remote_ip=source)
        assert refusal["outcome"] == "denied"
    assert index(site) == before
