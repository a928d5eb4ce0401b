"""The database schema: projects, members, datasets, shares, policies, headless runs and the parameter names of
the workspace's notebooks; room for releases.

Names are stored as typed (NFC) with a ``name_key`` (NFKC, case-folded) that carries the uniqueness
constraint, so that names which people or OpenBao would confuse cannot both exist.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class SchemaVersion(Base):
    """One row: the schema version this database has (see ``db.py`` for the upgrades)."""

    __tablename__ = "securehpc_schema"
    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(Integer)


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    name_key: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(255))
    # Policy settings as a JSON object (see policy.Policy); missing keys take the defaults.
    policy: Mapped[dict] = mapped_column(JSON, default=dict)
    # The Unix group of the project's principals (principals/names.py), recorded when the project is created;
    # None for projects from before principals, until `securehpc account sync`.
    unix_group: Mapped[str | None] = mapped_column(String(32), nullable=True, unique=True)

    members: Mapped[list[Member]] = relationship(back_populates="project", cascade="all, delete-orphan")
    datasets: Mapped[list[Dataset]] = relationship(back_populates="project", cascade="all, delete-orphan")
    principals: Mapped[list[Principal]] = relationship(back_populates="project", cascade="all, delete-orphan")


class Member(Base):
    __tablename__ = "members"
    __table_args__ = (UniqueConstraint("project_id", "username"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    username: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(32))
    added_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    added_by: Mapped[str] = mapped_column(String(255))

    project: Mapped[Project] = relationship(back_populates="members")


class Principal(Base):
    """The Unix account that sessions and headless runs of one person in one project run as.

    Named once, when the person joins (principals/names.py), and kept when they leave (``state`` "locked"),
    so that a name is never given to another pair and a returning member gets their account, and files, back.
    """

    __tablename__ = "principals"
    __table_args__ = (UniqueConstraint("project_id", "username"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    username: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(32), unique=True)
    state: Mapped[str] = mapped_column(String(16), default="active")  # active, locked
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(255))
    locked_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)

    project: Mapped[Project] = relationship(back_populates="principals")


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("project_id", "name_key"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    name_key: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(255))
    file_count: Mapped[int] = mapped_column(Integer, default=0)
    size_bytes: Mapped[int] = mapped_column(Integer, default=0)
    # sha256 of the manifest (path -> sha256 of each file) that was verified after the import.
    manifest_sha256: Mapped[str] = mapped_column(String(64))

    project: Mapped[Project] = relationship(back_populates="datasets")
    shares: Mapped[list[Share]] = relationship(back_populates="dataset", cascade="all, delete-orphan")


class Share(Base):
    """A dataset offered read-only to another project: pending until a data owner there accepts."""

    __tablename__ = "shares"
    __table_args__ = (UniqueConstraint("dataset_id", "target_project_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    target_project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(16))  # pending, accepted, revoked
    offered_by: Mapped[str] = mapped_column(String(255))
    offered_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    decided_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
    decided_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)

    dataset: Mapped[Dataset] = relationship(back_populates="shares")
    target_project: Mapped[Project] = relationship()


class Run(Base):
    """A headless papermill run (``runs/``): what was asked, its Slurm job, its state and how it ended.

    Written through ``ProjectService`` only (``projects/runs.py``). Columns after ``created_at`` came with schema
    version 2 (``db.py``) and are nullable, so that rows of version 1 keep their meaning."""

    __tablename__ = "runs"
    __table_args__ = (Index("ix_runs_run_id", "run_id", unique=True),)
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    username: Mapped[str] = mapped_column(String(255))
    notebook: Mapped[str] = mapped_column(String(1024))
    parameters: Mapped[dict] = mapped_column(JSON, default=dict)
    job_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="created")
    output_path: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # --- schema version 2 ---
    # The run's public name (URLs, the workspace folder runs/RUN_ID, the job's tag).
    run_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    kernel: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # {"gpus", "cpus", "memory_gb", "minutes"} as granted under the policy.
    resources: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    # SHA-256 of the run's report secret (the secret went to the job and is not kept).
    report_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cells_done: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cells_total: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # How it ended: one line for people, and on a notebook error the cell's index and the exception's name.
    reason: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    failed_cell: Mapped[int | None] = mapped_column(Integer, nullable=True)
    exception: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # The node launcher's messages (never the notebook's output), the last few.
    messages: Mapped[list | None] = mapped_column(JSON, nullable=True)
    submitted_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    started_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    ended_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    # Who cancelled it.
    ended_by: Mapped[str | None] = mapped_column(String(255), nullable=True)


class NotebookParameters(Base):
    """The parameter names of one notebook of a project's workspace, as a session last reported them when the
    notebook was saved in JupyterLab (``projects/notebooks.py``): names only, never values. Schema version 4."""

    __tablename__ = "notebook_parameters"
    __table_args__ = (UniqueConstraint("project_id", "path"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    # Relative to the workspace, as the contents API and ``securehpc run submit`` name it.
    path: Mapped[str] = mapped_column(String(1024))
    # The parameters cell's names in the cell's order ([] for a notebook without a parameters cell).
    names: Mapped[list] = mapped_column(JSON, default=list)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # The person whose session reported the save.
    reported_by: Mapped[str] = mapped_column(String(255))


class ReleaseRequest(Base):
    """Files a member asks to take out of a project (the airlock), with the hashes that are reviewed."""

    __tablename__ = "release_requests"
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    requested_by: Mapped[str] = mapped_column(String(255))
    files: Mapped[dict] = mapped_column(JSON, default=dict)  # path -> sha256
    state: Mapped[str] = mapped_column(String(16), default="pending")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    reviews: Mapped[list] = mapped_column(JSON, default=list)  # [{reviewer, decision, at}]
