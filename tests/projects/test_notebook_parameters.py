"""The index of notebook parameter names through ``ProjectService`` (projects/notebooks.py), with a real database
and OpenBao: what sessions report is recorded for a role that may write (an observer's or a non-member's report is
refused and audited), renames and deletes move and drop entries, and ``submit_run`` refuses unknown names before
anything is recorded, deny by default for a notebook the index does not know; uploads are read directly. Schema
version 4 is reached from version 3 keeping every row.

The same through a real hub, session and Slurm: tests/runs/test_run_parameter_index.py."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import nbformat
import pytest
from sqlalchemy import select, text

from jupyter_securehpc.audit import AuditLog
from jupyter_securehpc.devcluster import openbao
from jupyter_securehpc.keys import KeyStore, KeyStoreConfig
from jupyter_securehpc.projects import db
from jupyter_securehpc.projects.model import Member, NotebookParameters, Principal, Project, Run
from jupyter_securehpc.projects.service import Actor, BadInput, NotMember, ProjectService, Refused
from jupyter_securehpc.session.parameters import ParametersChange

HUB = "jupyterhub-runs"


class Site:
    def __init__(self, root: Path, keys: KeyStore) -> None:
        self.root, self.keys = root, keys
        self.audit_log = root / "audit.jsonl"
        self.sessions = db.open_database(f"sqlite:///{root / 'securehpc.sqlite'}")

    def service(self, actor: Actor) -> ProjectService:
        return ProjectService(self.sessions, self.keys, AuditLog(self.audit_log), self.root / "stores", actor)

    def person(self, name: str) -> ProjectService:
        return self.service(Actor.signed_in(name, is_admin=False, via="hub-runs"))

    def hub(self) -> ProjectService:
        return self.service(Actor(admin=HUB))

    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.audit_log.read_text().splitlines()]

    def runs(self) -> int:
        with self.sessions() as session:
            return len(session.scalars(select(Run)).all())


@pytest.fixture(scope="module")
def site(local_cluster, tmp_path_factory) -> Site:
    """sleep: alice owns it, bob is a data scientist, olga an observer; mallory is in no project."""
    layout = local_cluster.layout
    root = tmp_path_factory.mktemp("nbparams")
    prefix = f"n{secrets.token_hex(4)}"
    keys = KeyStore(KeyStoreConfig(url=layout.openbao_addr, token=openbao.root_token(layout), prefix=prefix,
                                   policy_prefix=f"{prefix}-project-"))  # fmt: skip
    site = Site(root, keys)
    admin = site.service(Actor(admin="test-admin"))
    admin.create_project("sleep", owner="alice")
    admin.create_project("other", owner="alice")
    admin.add_member("sleep", "bob", "data_scientist")
    admin.add_member("sleep", "olga", "observer")
    return site


def saved(path: str, *names: str) -> ParametersChange:
    return ParametersChange(path, names=tuple(names))


def entry(site: Site, project: str, path: str) -> dict | None:
    return site.hub().notebook_parameters(project, path)


def notebook_text(parameters: str) -> str:
    document = nbformat.v4.new_notebook()
    document.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = nbformat.v4.new_code_cell(parameters)
    cell.metadata["tags"] = ["parameters"]
    document.cells = [cell, nbformat.v4.new_code_cell("print(alpha)")]
    return nbformat.writes(document)


def test_a_save_in_a_writing_role_is_recorded_with_who_and_when(site):
    site.hub().record_notebook_parameters("sleep", "bob", saved("analysis/sweep.ipynb", "alpha", "subjects", "label"))
    found = entry(site, "sleep", "analysis/sweep.ipynb")
    assert found["names"] == ["alpha", "subjects", "label"] and found["reported_by"] == "bob"
    event = site.events()[-1]
    assert (event["action"], event["outcome"], event["project"], event["details"]["user"]) == (
        "notebook.parameters", "allowed", "sleep", "bob"
    )  # fmt: skip
    assert "alpha" not in json.dumps(event)  # the count of names, not the names
    # A later save replaces the names.
    site.hub().record_notebook_parameters("sleep", "alice", saved("analysis/sweep.ipynb", "alpha", "subjects"))
    assert entry(site, "sleep", "analysis/sweep.ipynb")["names"] == ["alpha", "subjects"]
    site.hub().record_notebook_parameters("sleep", "bob", saved("analysis/sweep.ipynb", "alpha", "subjects", "label"))


def test_a_save_with_the_names_the_index_has_changes_only_who_and_when(site):
    first = entry(site, "sleep", "analysis/sweep.ipynb")
    audited = len(site.events())
    site.hub().record_notebook_parameters("sleep", "alice", saved("analysis/sweep.ipynb", "alpha", "subjects", "label"))
    again = entry(site, "sleep", "analysis/sweep.ipynb")
    assert again["names"] == first["names"] and again["reported_by"] == "alice"
    assert again["updated_at"] >= first["updated_at"]
    assert len(site.events()) == audited  # JupyterLab's autosaves do not fill the audit log


@pytest.mark.parametrize(("user", "says"), [("olga", "observer may not workspace.write"),
                                            ("mallory", "mallory is not a member")])  # fmt: skip
def test_an_observers_or_strangers_session_cannot_change_the_index(site, user, says):
    before = entry(site, "sleep", "analysis/sweep.ipynb")
    for change in (saved("analysis/sweep.ipynb", "evil"), ParametersChange("analysis", deleted=True),
                   ParametersChange("analysis", renamed_to="elsewhere")):  # fmt: skip
        with pytest.raises(Refused, match=says):
            site.hub().record_notebook_parameters("sleep", user, change)
        event = site.events()[-1]
        assert (event["action"], event["outcome"], event["details"]["user"]) == ("notebook.parameters", "denied", user)
    assert entry(site, "sleep", "analysis/sweep.ipynb") == before


def test_only_the_hub_records_and_a_project_must_exist(site):
    with pytest.raises(Refused, match="only hub admins"):
        site.person("bob").record_notebook_parameters("sleep", "bob", saved("x.ipynb"))
    with pytest.raises(BadInput, match="does not exist"):
        site.hub().record_notebook_parameters("nosuch", "bob", saved("x.ipynb"))


def test_renames_move_entries_and_deletes_drop_them_also_in_folders(site):
    hub = site.hub()
    hub.record_notebook_parameters("sleep", "bob", saved("tmp/a.ipynb", "x"))
    hub.record_notebook_parameters("sleep", "bob", saved("tmp/deep/b.ipynb", "y"))
    hub.record_notebook_parameters("sleep", "bob", saved("tmpfile.ipynb", "z"))  # not in the folder tmp
    hub.record_notebook_parameters("sleep", "bob", ParametersChange("tmp", renamed_to="moved"))
    assert entry(site, "sleep", "tmp/a.ipynb") is None
    assert entry(site, "sleep", "moved/a.ipynb")["names"] == ["x"]
    assert entry(site, "sleep", "moved/deep/b.ipynb")["names"] == ["y"]
    assert entry(site, "sleep", "tmpfile.ipynb")["names"] == ["z"]
    hub.record_notebook_parameters("sleep", "bob", ParametersChange("moved/a.ipynb", renamed_to="moved/a.txt"))
    assert entry(site, "sleep", "moved/a.txt") is None and entry(site, "sleep", "moved/a.ipynb") is None
    # A rename onto a notebook the index knows: the old entry there goes.
    hub.record_notebook_parameters("sleep", "bob", ParametersChange("tmpfile.ipynb", renamed_to="moved/deep/b.ipynb"))
    assert entry(site, "sleep", "moved/deep/b.ipynb")["names"] == ["z"]
    hub.record_notebook_parameters("sleep", "bob", ParametersChange("moved", deleted=True))
    assert entry(site, "sleep", "moved/deep/b.ipynb") is None


def test_the_index_is_per_project(site):
    site.hub().record_notebook_parameters("other", "alice", saved("analysis/sweep.ipynb", "gamma"))
    assert entry(site, "other", "analysis/sweep.ipynb")["names"] == ["gamma"]
    assert entry(site, "sleep", "analysis/sweep.ipynb")["names"] == ["alpha", "subjects", "label"]


def submission(notebook: str = "analysis/sweep.ipynb", **parameters: object) -> dict:
    return {"project": "sleep", "notebook": notebook, "parameters": parameters}


def test_an_unknown_name_is_refused_in_one_line_naming_the_known_ones_and_nothing_is_recorded(site):
    runs = site.runs()
    with pytest.raises(BadInput) as refused:
        site.person("bob").submit_run(submission(alpha=1, betaa=2), report_hash="0" * 64)
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(
        "unknown parameter betaa for sleep's analysis/sweep.ipynb: its parameters cell defines alpha, subjects, label "
        "(as saved in JupyterLab on "
    ) and message.endswith(" UTC); nothing was submitted")  # fmt: skip
    assert site.runs() == runs
    event = site.events()[-1]
    assert (event["actor"], event["action"], event["outcome"], event["reason"]) == ("bob", "run.submit", "denied",
                                                                                     message)  # fmt: skip
    with pytest.raises(BadInput, match="unknown parameters betaa, gamma for"):
        site.person("bob").submit_run(submission(betaa=2, gamma=3), report_hash="0" * 64)


def test_known_names_and_no_parameters_pass(site):
    runs = site.runs()
    record = site.person("bob").submit_run(submission(alpha=1, label="x"), report_hash="0" * 64)
    assert record.parameters == {"alpha": 1, "label": "x"}
    site.person("bob").submit_run(submission("never/saved.ipynb"), report_hash="0" * 64)  # no parameters: no check
    assert site.runs() == runs + 2
    hub = site.hub()
    for run in site.person("bob").list_runs("sleep"):
        hub.record_slurm_state(run.run_id, "CANCELLED")


def test_a_notebook_the_index_does_not_know_is_refused_with_parameters_telling_how_to_fix_it(site):
    runs = site.runs()
    with pytest.raises(Refused) as refused:
        site.person("bob").submit_run(submission("never/saved.ipynb", alpha=1), report_hash="0" * 64)
    assert str(refused.value) == (
        "the hub does not know the parameters cell of sleep's never/saved.ipynb: open the notebook in a JupyterLab "
        "session of sleep and save it once (the session tells the hub its parameter names), or run it without "
        "parameters; nothing was submitted"
    )
    assert site.runs() == runs and site.events()[-1]["outcome"] == "denied"


def test_a_notebook_without_a_parameters_cell_takes_no_names(site):
    site.hub().record_notebook_parameters("sleep", "bob", saved("plain.ipynb"))
    with pytest.raises(BadInput, match=r"unknown parameter alpha for sleep's plain\.ipynb: its parameters cell "
                                       r"defines nothing \(no cell is tagged 'parameters'\)"):  # fmt: skip
        site.person("bob").submit_run(submission("plain.ipynb", alpha=1), report_hash="0" * 64)


def test_others_learn_no_names(site):
    """A non-member gets the answer of a project that does not exist; an observer the refusal of runs."""
    for person, refusal in (("mallory", NotMember), ("olga", Refused)):
        with pytest.raises(refusal) as refused:
            site.person(person).submit_run(submission(betaa=1), report_hash="0" * 64)
        assert "alpha" not in str(refused.value) and "subjects" not in str(refused.value)
    with pytest.raises(NotMember):
        site.person("mallory").notebook_parameters("sleep", "analysis/sweep.ipynb")


def test_an_uploads_parameters_cell_is_read_at_the_hub(site):
    upload = {"name": "local.ipynb", "content": notebook_text("alpha = 1\nbeta = 2")}
    runs = site.runs()
    with pytest.raises(BadInput, match=r"^unknown parameter gamma for the uploaded local\.ipynb: its parameters cell "
                                       r"defines alpha, beta; nothing was submitted$"):  # fmt: skip
        site.person("alice").submit_run({"project": "sleep", "upload": upload, "parameters": {"gamma": 1}},
                                        report_hash="0" * 64)  # fmt: skip
    assert site.runs() == runs
    record = site.person("alice").submit_run({"project": "sleep", "upload": upload, "parameters": {"beta": 1}},
                                             report_hash="0" * 64)  # fmt: skip
    site.hub().record_slurm_state(record.run_id, "CANCELLED")


# --- schema version 4 ----------------------------------------------------------------------------------------


def test_version_3_is_upgraded_to_4_keeping_its_rows(tmp_path):
    url = f"sqlite:///{tmp_path / 'v3.sqlite'}"
    engine = db.make_engine(url)
    db.upgrade(engine)
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE notebook_parameters")
        connection.execute(text("UPDATE securehpc_schema SET version = 3"))
        connection.execute(
            text("INSERT INTO projects (id, name, name_key, created_at, created_by, policy, unix_group) "
                 "VALUES (1, 'sleep', 'sleep', '2025-01-01 00:00:00', 'root', '{}', 'shpc_sleep')")
        )  # fmt: skip
        connection.execute(
            text("INSERT INTO members (id, project_id, username, role, added_at, added_by) "
                 "VALUES (3, 1, 'bob', 'data_scientist', '2025-01-02 00:00:00', 'root')")
        )  # fmt: skip
        connection.execute(
            text("INSERT INTO principals (id, project_id, username, name, state, created_at, created_by) "
                 "VALUES (5, 1, 'bob', 'p_sleep_bob', 'active', '2025-01-02 00:00:00', 'root')")
        )  # fmt: skip
        connection.execute(
            text("INSERT INTO runs (id, project_id, username, notebook, parameters, state, created_at, run_id) "
                 "VALUES (7, 1, 'bob', 'a.ipynb', '{\"alpha\": 1}', 'succeeded', '2025-01-03 00:00:00', 'abc')")
        )  # fmt: skip
    engine.dispose()
    sessions = db.open_database(url)
    with db.make_engine(url).connect() as connection:
        assert db.current_version(connection) == max(db.UPGRADES) >= 4
    with sessions() as session:
        assert session.scalars(select(Project.unix_group)).one() == "shpc_sleep"
        assert [(m.username, m.role) for m in session.scalars(select(Member))] == [("bob", "data_scientist")]
        assert session.scalars(select(Principal.name)).one() == "p_sleep_bob"
        run = session.scalars(select(Run)).one()
        assert (run.run_id, run.parameters, run.state) == ("abc", {"alpha": 1}, "succeeded")
        assert session.scalars(select(NotebookParameters)).all() == []
        session.add(NotebookParameters(project_id=1, path="a.ipynb", names=["alpha"], reported_by="bob"))
        session.commit()
        assert session.scalars(select(NotebookParameters.names)).one() == ["alpha"]
    # A fresh database and the upgraded one have the same table.
    fresh = db.make_engine(f"sqlite:///{tmp_path / 'fresh.sqlite'}")
    db.upgrade(fresh)
    with fresh.connect() as a, db.make_engine(url).connect() as b:
        columns = "SELECT name, type, \"notnull\" FROM pragma_table_info('notebook_parameters') ORDER BY cid"
        assert a.execute(text(columns)).all() == b.execute(text(columns)).all()
