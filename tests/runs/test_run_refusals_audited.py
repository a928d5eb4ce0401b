"""Every refusal of a headless run is an audit event (issue 18): the hub decides, not the client.

A real hub with the runs API, the local Slurm and OpenBao (tests/e2e_hub.py), the test user logged in through the
OpenID provider with an API token. Each bad submission goes through ``securehpc run submit`` (or Python, or REST):
the command exits 1 with the one-line refusal, no job appears in Slurm, and the site's audit log (the hash-chained
``audit.jsonl``) has exactly one new event, a denied ``run.submit`` of the user naming the reason. Nothing here
needs a notebook in the workspace: every refusal comes before the hub would submit. What the hub never sees (an
unreadable ``-f`` file) is a local error, with no event.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from jupyter_securehpc import runs
from jupyter_securehpc.audit import AuditLog, verify
from jupyter_securehpc.devcluster import openbao
from jupyter_securehpc.keys import KeyStore, KeyStoreConfig
from jupyter_securehpc.projects.db import open_database
from jupyter_securehpc.projects.service import Actor, ProjectService
from jupyter_securehpc.runs.client import RunRefused
from jupyter_securehpc.session.spec import MAX_UPLOAD_BYTES

pytestmark = [pytest.mark.slurm, pytest.mark.openbao, pytest.mark.sandbox]
CLI = str(Path(sys.executable).with_name("securehpc"))
NOTEBOOK = "analysis/sweep.ipynb"


def cli(e2e, token: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "JUPYTERHUB_URL": e2e["layout"].hub_url, "JUPYTERHUB_API_TOKEN": token}
    return subprocess.run([CLI, "run", *args], env=env, capture_output=True, text=True, timeout=120, check=False)


def events(e2e) -> list[dict]:
    return [json.loads(line) for line in (e2e["root"] / "audit.jsonl").read_text().splitlines()]


def all_jobs(e2e) -> str:
    return subprocess.run(["squeue", "--noheader", "--states=all", "--format=%i %k"], env=e2e["slurm_env"],
                          capture_output=True, text=True, timeout=30, check=True).stdout  # fmt: skip


class Watch:
    """The Slurm queue and the audit log before a step; ``refusal()`` checks that one denied run.submit came."""

    def __init__(self, e2e) -> None:
        self.e2e, self.jobs, self.audited = e2e, all_jobs(e2e), len(events(e2e))

    def refusal(self, says: str) -> dict:
        assert all_jobs(self.e2e) == self.jobs
        new = events(self.e2e)[self.audited :]
        assert [(e["action"], e["outcome"]) for e in new] == [("run.submit", "denied")], new
        assert new[0]["actor"] == self.e2e["user"].name and says in new[0]["reason"], new[0]
        return new[0]

    def nothing(self) -> None:
        assert all_jobs(self.e2e) == self.jobs and len(events(self.e2e)) == self.audited


@pytest.fixture(scope="module")
def uploads(e2e):
    """Project other lets data scientists upload, so that the hub looks at an upload's name, size and text."""
    settings, layout = e2e["settings"], e2e["layout"]
    keys = KeyStore(KeyStoreConfig(url=layout.openbao_addr, token=openbao.root_token(layout),
                                   prefix=settings["KeyStoreConfig.prefix"],
                                   policy_prefix=settings["KeyStoreConfig.policy_prefix"]))  # fmt: skip
    admin = ProjectService(open_database(settings["SecureHPC.db_url"]), keys, AuditLog(e2e["root"] / "audit.jsonl"),
                           e2e["root"] / "stores", Actor(admin="test-admin"))  # fmt: skip
    admin.set_policy("other", ["upload_roles=data_owner,data_scientist"])
    return "other"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["-p", "bad-name", "1"], "parameter name 'bad-name' is not a Python identifier"),
        (["-p", "class", "1"], "parameter name 'class' is not a Python identifier"),
        (["-p", "\u0430lpha", "1"], "has letters outside ASCII (a look-alike of a Latin letter?)"),
        (["-p", "x", "nan"], "parameter x: 'nan' is not JSON (NaN and infinities are not JSON numbers)"),
        (["-p", "x", "{bad"], "parameter x: '{bad' is not JSON; quote text as JSON (\"{bad\") or give it as text "
                              "with -r x TEXT"),
        (["-p", "x", "Infinity"], "parameter x: 'Infinity' is not JSON (NaN and infinities are not JSON numbers)"),
    ],
)  # fmt: skip
def test_bad_names_and_values_are_refused_by_the_hub_and_audited(e2e, token, args, says):
    watch = Watch(e2e)
    result = cli(e2e, token, "submit", "sleep", NOTEBOOK, *args)
    assert result.returncode == 1 and result.stdout == "", result.stdout
    assert result.stderr.startswith("securehpc: refused: ") and says in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1
    watch.refusal(says)


def test_a_yaml_date_in_a_parameters_file_is_refused_by_the_hub_and_audited(e2e, token, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("alpha: 0.5\nstart: 2024-01-31\n")
    watch = Watch(e2e)
    result = cli(e2e, token, "submit", "sleep", NOTEBOOK, "-f", str(params))
    says = "parameter start: '2024-01-31' is not JSON; quote text as JSON (\"2024-01-31\")"
    assert result.returncode == 1 and says in result.stderr and result.stderr.count("\n") == 1, result.stderr
    watch.refusal(says)
    # A file the hub never sees is the terminal's own error: no event.
    watch = Watch(e2e)
    result = cli(e2e, token, "submit", "sleep", NOTEBOOK, "-f", str(tmp_path / "missing.yaml"))
    assert result.returncode == 1 and result.stderr.startswith("securehpc: error: cannot read "), result.stderr
    assert "nothing was sent to the hub" in result.stderr
    watch.nothing()


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("../other/x.ipynb", "contains '..': a run's notebook must be inside the workspace"),
        ("analysis/../../x.ipynb", "contains '..'"),
        ("/etc/passwd.ipynb", "outside the project's workspace"),
    ],
)
def test_paths_outside_the_workspace_are_refused_from_the_command_line_and_audited(e2e, token, path, says):
    watch = Watch(e2e)
    result = cli(e2e, token, "submit", "sleep", path)
    assert result.returncode == 1 and result.stderr.startswith("securehpc: refused: "), result.stderr
    assert says in result.stderr and result.stderr.count("\n") == 1
    watch.refusal(says)


def test_an_oversize_or_non_utf8_upload_is_refused_by_the_hub_without_its_content(e2e, token, uploads, tmp_path):
    big = tmp_path / "big.ipynb"
    canary = "canary-oversize-upload"
    big.write_text(json.dumps({"cells": [], "x": canary}) + " " * MAX_UPLOAD_BYTES)
    watch = Watch(e2e)
    result = cli(e2e, token, "submit", uploads, "--upload", str(big))
    size = big.stat().st_size
    says = f"upload 'big.ipynb' has {size} bytes: an uploaded notebook may have at most {MAX_UPLOAD_BYTES}"
    assert result.returncode == 1 and says in result.stderr and result.stderr.count("\n") == 1, result.stderr
    event = watch.refusal(says)
    assert canary not in json.dumps(event)
    latin1 = tmp_path / "latin1.ipynb"
    latin1.write_bytes('{"cells": [], "name": "Ärzte"}'.encode("latin-1"))
    watch = Watch(e2e)
    result = cli(e2e, token, "submit", uploads, "--upload", str(latin1))
    says = "upload 'latin1.ipynb' is not a notebook (not UTF-8 text)"
    assert result.returncode == 1 and says in result.stderr and result.stderr.count("\n") == 1, result.stderr
    watch.refusal(says)
    badly_named = tmp_path / "data.csv"
    badly_named.write_text("{}")
    watch = Watch(e2e)
    result = cli(e2e, token, "submit", uploads, "--upload", str(badly_named))
    assert result.returncode == 1 and "upload name 'data.csv' is not usable" in result.stderr, result.stderr
    watch.refusal("upload name 'data.csv' is not usable")


def test_python_sends_nan_for_the_hub_to_refuse_and_the_rest_api_takes_parameters_json(e2e, token):
    hub_url = e2e["layout"].hub_url
    watch = Watch(e2e)
    with pytest.raises(RunRefused) as refused:
        runs.submit("sleep", NOTEBOOK, {"alpha": float("nan")}, hub_url=hub_url, token=token)
    says = "parameter alpha: 'NaN' is not JSON (NaN and infinities are not JSON numbers)"
    assert says in str(refused.value) and "\n" not in str(refused.value)
    watch.refusal(says)
    # REST: a name given twice, and parameters_json of the wrong shape.
    for body, says in [
        ({"parameters": {"alpha": 1}, "parameters_json": {"alpha": "2"}}, "parameter alpha is given twice"),
        ({"parameters_json": {"alpha": 2}}, "holds each value's JSON text as a string"),
    ]:
        watch = Watch(e2e)
        answer = requests.post(f"{hub_url}/hub/api/securehpc/runs", headers={"Authorization": f"token {token}"},
                               json={"project": "sleep", "notebook": NOTEBOOK, **body}, timeout=60)  # fmt: skip
        assert answer.status_code == 400 and says in answer.json()["message"], answer.text
        watch.refusal(says)
    assert verify(e2e["root"] / "audit.jsonl").ok
