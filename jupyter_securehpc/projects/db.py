"""Open the database and bring its schema to the version this code expects, without losing data.

Every schema change is a numbered step in ``UPGRADES`` that transforms version N-1 into N inside one
transaction. A fresh database is created at the newest version directly. A database written by a newer
version of jupyter-securehpc is refused rather than guessed at.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
    select,
    update,
)
from sqlalchemy.orm import Session, sessionmaker

from .model import Base, SchemaVersion

log = logging.getLogger(__name__)


def _v1_initial(connection: Connection) -> None:
    Base.metadata.create_all(connection)


# The columns that version 2 added to ``runs`` (headless runs), as they were then: a later change of the model
# must not change what this step does.
_V2_RUN_COLUMNS = {
    "run_id": String(32),
    "kernel": String(64),
    "resources": JSON(),
    "report_hash": String(64),
    "cells_done": Integer(),
    "cells_total": Integer(),
    "reason": String(1024),
    "failed_cell": Integer(),
    "exception": String(128),
    "messages": JSON(),
    "submitted_at": DateTime(),
    "started_at": DateTime(),
    "ended_at": DateTime(),
    "ended_by": String(255),
}


def _v2_runs(connection: Connection) -> None:
    """Headless runs: the columns of a run's life, each nullable, and a unique public run id. Version 1's
    ``create_all`` made the table from the model of its time (a placeholder); rows it may hold keep every value
    and get the run id ``legacy-<id>``. A database created fresh already has all of it (``_v1_initial`` builds
    the current model): then nothing happens."""
    present = {column["name"] for column in inspect(connection).get_columns("runs")}
    preparer = connection.dialect.identifier_preparer
    for name, kind in _V2_RUN_COLUMNS.items():
        if name not in present:
            column_type = kind.compile(dialect=connection.dialect)
            connection.exec_driver_sql(f"ALTER TABLE runs ADD COLUMN {preparer.quote(name)} {column_type}")
    runs = Table("runs", MetaData(), Column("id", Integer), Column("run_id", String(32)))
    for (row_id,) in connection.execute(select(runs.c.id).where(runs.c.run_id.is_(None))).all():
        connection.execute(update(runs).where(runs.c.id == row_id).values(run_id=f"legacy-{row_id}"))
    Index("ix_runs_run_id", runs.c.run_id, unique=True).create(connection, checkfirst=True)


def _v3_principals(connection: Connection) -> None:
    """One principal per person per project: the table of principals and each project's Unix group (None for
    existing projects until ``securehpc account sync`` names it). A database created fresh has both already."""
    metadata = MetaData()
    projects = Table("projects", metadata, Column("id", Integer, primary_key=True), Column("unix_group", String(32)))
    principals = Table(
        "principals",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("project_id", Integer, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
        Column("username", String(255), nullable=False),
        Column("name", String(32), nullable=False, unique=True),
        Column("state", String(16), nullable=False),
        Column("created_at", DateTime(), nullable=False),
        Column("created_by", String(255), nullable=False),
        Column("locked_at", DateTime(), nullable=True),
        UniqueConstraint("project_id", "username"),
    )
    principals.create(connection, checkfirst=True)
    if "unix_group" not in {column["name"] for column in inspect(connection).get_columns("projects")}:
        connection.exec_driver_sql("ALTER TABLE projects ADD COLUMN unix_group VARCHAR(32)")
        Index("ix_projects_unix_group", projects.c.unix_group, unique=True).create(connection)


def _v4_notebook_parameters(connection: Connection) -> None:
    """The parameter names of the workspace's notebooks, as sessions report them on each save (headless runs
    check a submission's names against them). A database created fresh has the table already."""
    metadata = MetaData()
    Table("projects", metadata, Column("id", Integer, primary_key=True))  # what the foreign key refers to
    Table(
        "notebook_parameters",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("project_id", Integer, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
        Column("path", String(1024), nullable=False),
        Column("names", JSON(), nullable=False),
        Column("updated_at", DateTime(), nullable=False),
        Column("reported_by", String(255), nullable=False),
        UniqueConstraint("project_id", "path"),
    ).create(connection, checkfirst=True)


# version -> step that upgrades version-1 to it. Append; never edit a released step.
UPGRADES: dict[int, Callable[[Connection], None]] = {
    1: _v1_initial, 2: _v2_runs, 3: _v3_principals, 4: _v4_notebook_parameters,
}  # fmt: skip


class SchemaError(RuntimeError):
    pass


def current_version(connection: Connection) -> int:
    if not inspect(connection).has_table(SchemaVersion.__tablename__):
        return 0
    row = connection.execute(select(SchemaVersion.version)).first()
    return row[0] if row else 0


def upgrade(engine: Engine, upgrades: dict[int, Callable[[Connection], None]] | None = None) -> int:
    """Apply the missing upgrade steps in order; return the version reached."""
    steps = UPGRADES if upgrades is None else upgrades
    latest = max(steps)
    with engine.begin() as connection:
        version = current_version(connection)
        if version > latest:
            raise SchemaError(
                f"the database is at schema version {version}, newer than this jupyter-securehpc "
                f"understands ({latest}): upgrade jupyter-securehpc"
            )
        for target in range(version + 1, latest + 1):
            log.info("upgrading database schema to version %d", target)
            steps[target](connection)
            SchemaVersion.__table__.create(connection, checkfirst=True)
            connection.execute(SchemaVersion.__table__.delete())
            connection.execute(SchemaVersion.__table__.insert().values(id=1, version=target))
    return latest


def _sqlite_connect(dbapi_connection, _record) -> None:  # noqa: ANN001
    # Python's sqlite3 module commits on its own before DDL; take over transaction control so that an
    # upgrade step (ALTER TABLE ...) is rolled back with the rest when it fails.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str) -> Engine:
    """An engine for ``url``; on SQLite with foreign keys enforced and transactional DDL."""
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
    return engine


def open_database(url: str) -> sessionmaker[Session]:
    """Sessions on ``url`` (SQLite file, PostgreSQL, ...), its schema upgraded first."""
    engine = make_engine(url)
    upgrade(engine)
    return sessionmaker(engine, expire_on_commit=False)
