"""The schema is versioned: a newer release upgrades an existing database without losing rows."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text

from jupyter_securehpc.projects import db
from jupyter_securehpc.projects.model import Member, Project


def test_fresh_database_is_at_the_latest_version(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.sqlite'}"
    db.open_database(url)
    with db.make_engine(url).connect() as connection:
        assert db.current_version(connection) == max(db.UPGRADES)


def test_upgrade_keeps_existing_rows(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    sessions = db.open_database(url)
    with sessions() as session, session.begin():
        project = Project(name="sleep", name_key="sleep", created_by="root", policy={"max_gpus": 2})
        session.add(project)
        session.add(Member(project=project, username="alice", role="data_owner", added_by="root"))

    # A later release adds a column with a default; the upgrade step runs once, rows survive.
    def add_column(connection):
        connection.execute(text("ALTER TABLE projects ADD COLUMN description VARCHAR(200) DEFAULT ''"))

    upgrades = {**db.UPGRADES, max(db.UPGRADES) + 1: add_column}
    engine = db.make_engine(url)
    assert db.upgrade(engine, upgrades) == max(upgrades)
    assert db.upgrade(engine, upgrades) == max(upgrades)  # nothing left to do: no second ALTER
    with engine.connect() as connection:
        assert db.current_version(connection) == max(upgrades)
        row = connection.execute(text("SELECT name, policy, description FROM projects")).one()
        assert row[0] == "sleep" and "max_gpus" in row[1] and row[2] == ""
        assert connection.execute(select(Member.username)).scalar_one() == "alice"


def test_a_failed_upgrade_step_changes_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'half.sqlite'}"
    db.open_database(url)

    def broken(connection):
        connection.execute(text("ALTER TABLE projects ADD COLUMN extra INTEGER"))
        raise RuntimeError("disk full")

    engine = db.make_engine(url)
    with pytest.raises(RuntimeError, match="disk full"):
        db.upgrade(engine, {**db.UPGRADES, max(db.UPGRADES) + 1: broken})
    with engine.connect() as connection:
        assert db.current_version(connection) == max(db.UPGRADES)
        columns = [row[1] for row in connection.execute(text("PRAGMA table_info(projects)"))]
        assert "extra" not in columns


def test_a_database_from_a_newer_release_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'new.sqlite'}"
    db.open_database(url)
    engine = db.make_engine(url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE securehpc_schema SET version = 99"))
    with pytest.raises(db.SchemaError, match="version 99, newer than"):
        db.open_database(url)
