"""The database schema: projects, members, datasets, shares, policies; room for runs and releases.

Names are stored as typed (NFC) with a ``name_key`` (NFKC, case-folded) that carries the uniqueness
constraint, so that names which people or OpenBao would confuse cannot both exist.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, ForeignKey, Integer, String, UniqueConstraint
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

    members: Mapped[list[Member]] = relationship(back_populates="project", cascade="all, delete-orphan")
    datasets: Mapped[list[Dataset]] = relationship(back_populates="project", cascade="all, delete-orphan")


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
    """A headless papermill run (filled in by the headless-run feature)."""

    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    username: Mapped[str] = mapped_column(String(255))
    notebook: Mapped[str] = mapped_column(String(1024))
    parameters: Mapped[dict] = mapped_column(JSON, default=dict)
    job_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="created")
    output_path: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


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
