"""Schema version 2 (headless runs): a database of version 1 is upgraded without losing a row or a value."""

from __future__ import annotations

from sqlalchemy import select, text

from jupyter_securehpc.projects import db
from jupyter_securehpc.projects.model import Project, Run

# The runs table as schema version 1 created it (the placeholder of the first release), in SQLite's words.
V1_RUNS = """
CREATE TABLE runs (
    id INTEGER NOT NULL, project_id INTEGER NOT NULL, username VARCHAR(255) NOT NULL,
    notebook VARCHAR(1024) NOT NULL, parameters JSON NOT NULL, job_id VARCHAR(64), state VARCHAR(16) NOT NULL,
    output_path VARCHAR(1024), created_at DATETIME NOT NULL,
    PRIMARY KEY (id), FOREIGN KEY(project_id) REFERENCES projects (id) ON DELETE CASCADE
)
"""


def version_1_database(url: str) -> None:
    """A database as the first release left it: version 1, its runs table, a project and a run row."""
    engine = db.make_engine(url)
    db.upgrade(engine)
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE runs")
        connection.exec_driver_sql(V1_RUNS)
        connection.execute(text("UPDATE securehpc_schema SET version = 1"))
        connection.execute(
            text("INSERT INTO projects (id, name, name_key, created_at, created_by, policy) "
                 "VALUES (1, 'sleep', 'sleep', '2024-01-01 00:00:00', 'root', '{}')")
        )  # fmt: skip
        connection.execute(
            text("INSERT INTO runs (id, project_id, username, notebook, parameters, job_id, state, output_path, "
                 "created_at) VALUES (7, 1, 'bob', 'a.ipynb', '{\"alpha\": 0.5}', '42', 'created', 'out', "
                 "'2024-01-02 03:04:05')")
        )  # fmt: skip


def test_version_1_is_upgraded_keeping_its_runs(tmp_path):
    url = f"sqlite:///{tmp_path / 'v1.sqlite'}"
    version_1_database(url)
    sessions = db.open_database(url)
    with db.make_engine(url).connect() as connection:
        assert db.current_version(connection) == max(db.UPGRADES) >= 2
        indexes = {row[1]: row[2] for row in connection.execute(text("PRAGMA index_list(runs)"))}
        assert indexes.get("ix_runs_run_id") == 1  # unique
    with sessions() as session:
        run = session.scalars(select(Run)).one()
        assert (run.id, run.username, run.notebook, run.parameters, run.job_id, run.state, run.output_path) == (
            7, "bob", "a.ipynb", {"alpha": 0.5}, "42", "created", "out"
        )  # fmt: skip
        assert run.created_at.isoformat() == "2024-01-02T03:04:05"
        assert run.run_id == "legacy-7" and run.cells_done is None and run.messages is None
        assert session.scalars(select(Project.name)).one() == "sleep"


def test_upgrading_twice_and_fresh_databases_agree(tmp_path):
    upgraded, fresh = f"sqlite:///{tmp_path / 'v1.sqlite'}", f"sqlite:///{tmp_path / 'fresh.sqlite'}"
    version_1_database(upgraded)
    db.open_database(upgraded)
    db.open_database(upgraded)  # nothing left to do
    db.open_database(fresh)

    def columns(url: str) -> set[str]:
        with db.make_engine(url).connect() as connection:
            return {row[1] for row in connection.execute(text("PRAGMA table_info(runs)"))}

    assert columns(upgraded) == columns(fresh) == set(Run.__table__.columns.keys())
