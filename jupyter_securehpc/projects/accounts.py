"""The principals of projects in the database, and their accounts: the part of ``ProjectService`` that names,
records, provisions and locks them, inside the service's own database transactions.

A member's principal is named once (``principals/names.py``) and recorded in ``principals``; its account is
made by the service's provisioner (``principals/accounts.py``). A removed member's principal is locked, not
deleted: the name stays taken (never given to another pair), the files keep their owner, and a returning member
gets both back. The project's group owns the workspace's ciphertext folder (``share_workspace``).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..principals import AccountProvisioner, group_id, group_name, principal_name
from .model import Principal, Project, utcnow

ACTIVE, LOCKED = "active", "locked"
# The workspace's ciphertext folder: the project's group may create, rename and remove (setgid: what is made
# in it belongs to the group too); nobody else may even list it. Its config and root IV: read-only, group.
WORKSPACE_MODE = 0o2770
WORKSPACE_FILE_MODE = 0o440
WORKSPACE_FILES = ("gocryptfs.conf", "gocryptfs.diriv")


class PrincipalClash(ValueError):
    """A computed name is already recorded for another (project, person) pair; nothing was changed."""


def ensure_group(session: Session, project: Project, accounts: AccountProvisioner) -> str:
    """The project's group: named and recorded if it is not yet, and made to exist by ``accounts``."""
    if project.unix_group is None:
        name = group_name(accounts.prefix, project.name)
        other = session.scalar(select(Project).where(Project.unix_group == name, Project.id != project.id))
        if other is not None:
            raise PrincipalClash(
                f"the group name {name!r} of project {project.name!r} is recorded for project {other.name!r}: "
                "choose another project name"
            )
        project.unix_group = name
        session.flush()
    accounts.ensure_group(project.unix_group, project=project.name)
    return project.unix_group


def ensure_principal(
    session: Session, project: Project, username: str, accounts: AccountProvisioner, created_by: str
) -> Principal:
    """``username``'s principal in ``project``: recorded (named now if new, unlocked if locked) and made."""
    group = ensure_group(session, project, accounts)
    principal = session.scalar(
        select(Principal).where(Principal.project_id == project.id, Principal.username == username)
    )
    if principal is None:
        name = principal_name(accounts.prefix, project.name, username)
        other = session.scalar(select(Principal).where(Principal.name == name))
        if other is not None:
            raise PrincipalClash(
                f"the principal name {name!r} of {username} in {project.name!r} is recorded for "
                f"{other.username} in project id {other.project_id}: ask the hub admin (a different "
                "ProjectAccounts.prefix separates them)"
            )
        principal = Principal(project=project, username=username, name=name, state=ACTIVE, created_by=created_by)
        session.add(principal)
        session.flush()
    principal.state, principal.locked_at = ACTIVE, None
    accounts.ensure_principal(principal.name, group, project=project.name, user=username)
    return principal


def lock_principal(session: Session, project: Project, username: str, accounts: AccountProvisioner) -> str | None:
    """Lock ``username``'s principal in ``project`` (a removed member); its name, or None if there was none."""
    principal = session.scalar(
        select(Principal).where(Principal.project_id == project.id, Principal.username == username)
    )
    if principal is None:
        return None
    principal.state, principal.locked_at = LOCKED, utcnow()
    accounts.lock_principal(principal.name, project=project.name, user=username)
    return principal.name


def active_principal(session: Session, project: Project, username: str) -> Principal | None:
    return session.scalar(
        select(Principal).where(
            Principal.project_id == project.id, Principal.username == username, Principal.state == ACTIVE
        )
    )


def share_workspace(workspace: Path, group: str) -> bool:
    """Give the workspace's ciphertext folder to the project's group (``WORKSPACE_MODE``), its config and root
    IV read-only to the group; owner root. False (nothing changed) while the group does not resolve here.

    Links are never followed: the folder and the two files must be what they claim (a link, a folder for a
    file, ... raises ValueError naming it).
    """
    gid = group_id(group)
    if gid is None:
        return False
    folder = os.open(workspace, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        os.fchown(folder, 0, gid)
        os.fchmod(folder, WORKSPACE_MODE)
        for name in WORKSPACE_FILES:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=folder)
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise ValueError(f"{workspace / name} is not a regular file")
                os.fchown(fd, 0, gid)
                os.fchmod(fd, WORKSPACE_FILE_MODE)
            finally:
                os.close(fd)
    finally:
        os.close(folder)
    return True
