"""Uploaded notebooks of headless runs at the hub's door: ``ProjectService.submit_run`` with ``upload``.

A notebook from outside the workspace is an upload: only the roles in the project policy's ``upload_roles`` may
send one (refused otherwise, audited, nothing recorded), it must be a notebook nbformat accepts and at most
``MAX_UPLOAD_BYTES``, and it travels in the signed run spec (never in the projects database) to
``runs/RUN_ID/input/NAME.ipynb``. The runner's side is in test_run_node.py. On the real OpenBao and gocryptfs
(projects are made as an admin makes them); nothing is submitted to Slurm here (that is the hub's next step).
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import nbformat
import pytest

from jupyter_securehpc import jobspec
from jupyter_securehpc.audit import AuditLog
from jupyter_securehpc.devcluster import openbao
from jupyter_securehpc.keys import KeyStore, KeyStoreConfig
from jupyter_securehpc.projects.db import open_database
from jupyter_securehpc.projects.service import Actor, BadInput, ProjectService, Refused
from jupyter_securehpc.runs.client import RunError, read_upload
from jupyter_securehpc.runs.client import request as run_request
from jupyter_securehpc.session.spec import MAX_UPLOAD_BYTES, RunRequestError, RunSpec, SpecError

pytestmark = [pytest.mark.openbao, pytest.mark.sandbox]


def notebook_text(code: str = "print(1)") -> str:
    document = nbformat.v4.new_notebook()
    # Its kernel, as JupyterLab saves it: papermill reads the parameters cell (hub and runner) through it.
    document.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    first = nbformat.v4.new_code_cell("alpha = 0.1")
    first.metadata["tags"] = ["parameters"]
    document.cells = [first, nbformat.v4.new_code_cell(code)]
    return nbformat.writes(document)


class Site:
    def __init__(self, root: Path, keys: KeyStore) -> None:
        self.root, self.keys = root, keys
        self.audit_log = root / "audit.jsonl"
        self.sessions = open_database(f"sqlite:///{root / 'securehpc.sqlite'}")

    def person(self, name: str) -> ProjectService:
        actor = Actor.signed_in(name, is_admin=False, via="hub-runs")
        return ProjectService(self.sessions, self.keys, AuditLog(self.audit_log), self.root / "stores", actor)

    def admin(self) -> ProjectService:
        return ProjectService(self.sessions, self.keys, AuditLog(self.audit_log), self.root / "stores",
                              Actor(admin="test-admin"))  # fmt: skip

    def last_event(self) -> dict:
        return json.loads(self.audit_log.read_text().splitlines()[-1])


@pytest.fixture(scope="module")
def site(local_cluster, tmp_path_factory) -> Site:
    """sleep: alice owns it (data_owner, in the default upload_roles), bob is a data_scientist (not in them)."""
    layout = local_cluster.layout
    root = tmp_path_factory.mktemp("uploads")
    prefix = f"u{secrets.token_hex(4)}"
    keys = KeyStore(KeyStoreConfig(url=layout.openbao_addr, token=openbao.root_token(layout), prefix=prefix,
                                   policy_prefix=f"{prefix}-project-"))  # fmt: skip
    site = Site(root, keys)
    site.admin().create_project("sleep", owner="alice")
    site.admin().add_member("sleep", "bob", "data_scientist")
    return site


def submission(content: str, name: str = "local.ipynb", **more: object) -> dict:
    return {"project": "sleep", "upload": {"name": name, "content": content}, "parameters": {"alpha": 2}, **more}


def test_an_upload_of_a_role_in_upload_roles_is_recorded_with_its_place_in_the_run_folder(site):
    content = notebook_text()
    record = site.person("alice").submit_run(submission(content), report_hash="0" * 64)
    assert record.notebook == f"runs/{record.run_id}/input/local.ipynb"
    # The content travels in the run spec the hub signs, and the executed copy goes beside the input.
    spec = record.spec
    assert spec.upload == content and spec.output_notebook == f"runs/{record.run_id}/local.ipynb"
    assert RunSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    event = site.last_event()
    assert event["action"] == "run.submit" and event["outcome"] == "allowed"
    assert event["details"]["upload_bytes"] == len(content.encode())
    assert len(event["details"]["upload_sha256"]) == 64
    assert content not in site.audit_log.read_text()
    # Never in the database: what the service reads back has no content.
    [stored] = [run for run in site.person("alice").list_runs("sleep") if run.run_id == record.run_id]
    assert stored.upload is None and stored.notebook == record.notebook


def test_a_role_not_in_upload_roles_is_refused_before_anything_is_recorded_and_audited(site):
    before = len(site.person("bob").list_runs("sleep"))
    with pytest.raises(Refused) as refused:
        site.person("bob").submit_run(submission(notebook_text()), report_hash="0" * 64)
    message = str(refused.value)
    assert "\n" not in message and "may not upload a notebook into sleep" in message and "upload_roles" in message
    event = site.last_event()
    assert (event["action"], event["outcome"], event["actor"]) == ("run.submit", "denied", "bob")
    assert "upload" in event["reason"]
    assert len(site.person("bob").list_runs("sleep")) == before
    # A policy that lists data_scientist lets bob upload.
    site.admin().set_policy("sleep", ["upload_roles=data_owner,data_scientist"])
    try:
        record = site.person("bob").submit_run(submission(notebook_text()), report_hash="1" * 64)
        assert record.notebook.endswith("/input/local.ipynb")
    finally:
        site.admin().set_policy("sleep", ["upload_roles=data_owner"])


@pytest.mark.parametrize(
    ("content", "name", "says"),
    [
        ("x" * (MAX_UPLOAD_BYTES + 1), "big.ipynb", f"at most {MAX_UPLOAD_BYTES}"),
        ("print('not a notebook')", "script.ipynb", "'script.ipynb' is not a valid notebook (nbformat"),
        ('{"cells": "no"}', "broken.ipynb", "'broken.ipynb' is not a valid notebook (nbformat"),
        (notebook_text(), "../escape.ipynb", "upload name '../escape.ipynb' is not usable"),
        (notebook_text(), "data.csv", "upload name 'data.csv' is not usable"),
    ],
)
def test_an_oversize_non_notebook_or_badly_named_upload_is_refused_with_a_clear_message(site, content, name, says):
    before = len(site.person("alice").list_runs("sleep"))
    with pytest.raises(BadInput) as refused:
        site.person("alice").submit_run(submission(content, name), report_hash="0" * 64)
    assert says in str(refused.value) and "\n" not in str(refused.value)
    event = site.last_event()
    assert (event["action"], event["outcome"]) == ("run.submit", "denied") and says in event["reason"]
    assert len(site.person("alice").list_runs("sleep")) == before


def test_an_upload_and_a_workspace_notebook_at_once_are_refused(site):
    with pytest.raises(BadInput, match="either a notebook of the workspace or an upload"):
        site.person("alice").submit_run(submission(notebook_text(), notebook="a.ipynb"), report_hash="0" * 64)


def test_the_run_spec_keeps_an_upload_in_its_own_folder():
    content = notebook_text()
    assert "upload" not in RunSpec("abc123", "a.ipynb").to_dict()
    for notebook in ("a.ipynb", "runs/other/input/a.ipynb", "runs/abc123/input/sub/a.ipynb"):
        with pytest.raises(RunRequestError):
            RunSpec("abc123", notebook, upload=content)
    with pytest.raises(SpecError, match="at most"):
        RunSpec.from_dict({"run_id": "abc123", "notebook": "runs/abc123/input/a.ipynb",
                           "upload": "x" * (MAX_UPLOAD_BYTES + 1)})  # fmt: skip
    # Signed and verified inside the session spec like every other field.
    spec = RunSpec("abc123", "runs/abc123/input/a.ipynb", upload=content)
    assert RunSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert jobspec  # the signing itself is test_run_contract's


def test_the_client_sends_the_hub_what_it_must_refuse_never_more_than_the_limit(tmp_path):
    """The hub decides (and audits): an oversize or non-UTF-8 file goes as its name and size, without content;
    a badly named one as given. Only a file that cannot be read is the client's own error (nothing sent)."""
    big = tmp_path / "big.ipynb"
    big.write_bytes(b" " * (MAX_UPLOAD_BYTES + 1))
    assert read_upload(big) == {"name": "big.ipynb", "size": MAX_UPLOAD_BYTES + 1, "withheld": "too large"}
    latin1 = tmp_path / "latin1.ipynb"
    latin1.write_bytes(text := '{"cells": "Ärzte"}'.encode("latin-1"))
    assert read_upload(latin1) == {"name": "latin1.ipynb", "size": len(text), "withheld": "not UTF-8"}
    named = tmp_path / "data.csv"
    named.write_text(notebook_text())
    assert read_upload(named) == {"name": "data.csv", "content": named.read_text()}
    with pytest.raises(RunError, match=r"cannot read .*missing\.ipynb: No such file or directory; nothing was sent"):
        read_upload(tmp_path / "missing.ipynb")
    # Both or neither of a workspace notebook and an upload: the hub answers that (audited).
    assert set(run_request("sleep", "a.ipynb", upload=big)) == {"project", "notebook", "upload"}
    assert run_request("sleep") == {"project": "sleep"}
    local = tmp_path / "local.ipynb"
    local.write_text(notebook_text())
    body = run_request("sleep", upload=local)
    assert body["upload"] == {"name": "local.ipynb", "content": local.read_text()} and "notebook" not in body


@pytest.mark.parametrize(
    ("upload", "says"),
    [
        ({"name": "big.ipynb", "size": MAX_UPLOAD_BYTES + 1, "withheld": "too large"},
         f"upload 'big.ipynb' has {MAX_UPLOAD_BYTES + 1} bytes: an uploaded notebook may have at most "
         f"{MAX_UPLOAD_BYTES}"),
        ({"name": "latin1.ipynb", "size": 17, "withheld": "not UTF-8"},
         "upload 'latin1.ipynb' is not a notebook (not UTF-8 text)"),
        ({"name": "small.ipynb", "size": 10, "withheld": "too large"}, "came without its content"),
        ({"name": "x.ipynb", "size": 10, "withheld": "lazy"}, "came without its content"),
        ({"name": "../x.ipynb", "size": MAX_UPLOAD_BYTES + 1, "withheld": "too large"},
         "upload name '../x.ipynb' is not usable"),
        ({"name": "x.ipynb", "size": 10}, "upload must be an object"),
    ],
)  # fmt: skip
def test_an_upload_the_client_withheld_is_refused_by_name_and_audited(site, upload, says):
    before = len(site.person("alice").list_runs("sleep"))
    with pytest.raises(BadInput) as refused:
        site.person("alice").submit_run({"project": "sleep", "upload": upload}, report_hash="0" * 64)
    assert says in str(refused.value) and "\n" not in str(refused.value)
    event = site.last_event()
    assert (event["action"], event["outcome"]) == ("run.submit", "denied") and says in event["reason"]
    assert len(site.person("alice").list_runs("sleep")) == before


def test_a_request_too_large_for_any_upload_names_both_limits():
    from jupyter_securehpc.runs.request import MAX_BODY, parse_body

    with pytest.raises(RunRequestError, match=f"uploaded notebook at most {MAX_UPLOAD_BYTES} bytes"):
        parse_body(b" " * (MAX_BODY + 1))
