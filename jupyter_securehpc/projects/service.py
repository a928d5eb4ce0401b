"""The data owner's and admin's operations on projects, as one library the CLI and the web pages call.

Every operation: authorise (``authz.decide``), validate, do the work all or nothing, and write one audit
event with who, what, which object and the outcome. A refusal or bad input raises before anything
changes; a failure half-way (OpenBao down, disk full) undoes what was done: database transaction rolled
back, new keys and store folders deleted.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased, sessionmaker

from ..audit import AuditError, AuditLog
from ..keys import KeyStore, WrappedSession
from ..principals import AccountProvisioner, InvalidAccountName, RecordOnly
from ..stores.gocryptfs import init_store
from ..stores.importer import SourceError, check_source, import_folder, incoming_dir, remove_stale_incoming
from ..vocabulary import DatasetRef, InvalidName, StoreLayout, name_key, validate_name
from . import accounts as principals
from .authz import Action, Subject, decide
from .model import Dataset, Member, Project, Share, utcnow
from .notebooks import NotebookService
from .policy import InvalidPolicy, Policy
from .roles import Role
from .runs import RunService

log = logging.getLogger(__name__)

_USERNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,254}")
SHARE_STATES = ("pending", "accepted", "revoked")
# Events per page of ``read_audit``.
MAX_AUDIT_PAGE = 500
# Projects named in the event of one view of a person's projects (names have at most 64 characters: ~70 KB).
MAX_NAMED_PROJECTS = 1000
# What my_projects reads of each project: a project and its running sessions.
MY_PROJECTS_READS = (Action.PROJECT_SHOW, Action.SESSION_LIST)


class Refused(PermissionError):
    """The acting user may not do this; the message says who, what and why."""


class NotMember(Refused):
    """Refused because the acting user is not a member of the project (front ends answer as for an unknown
    project, so that a project's existence does not leak)."""


class BadInput(ValueError):
    """The request names something that does not exist or is not valid; nothing was changed."""


class NotFound(BadInput):
    """The request names a project, dataset, member or share that does not exist; nothing was changed.

    ``kind`` is ``"project"`` (with its ``name``) when the project itself is unknown."""

    def __init__(self, message: str, *, kind: str = "", name: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.name = name


class Conflict(BadInput):
    """The request is valid but clashes with what exists (a taken name, a share in another state, the last
    data owner); nothing was changed."""


def validate_username(value: str) -> str:
    if not _USERNAME.fullmatch(value or ""):
        raise BadInput(
            f"user name {value!r} is not valid: use 1-255 letters, digits and . _ @ + - (as the hub shows it)"
        )
    return value


def split_dataset_ref(ref: str) -> DatasetRef:
    """``PROJECT/DATASET`` -> DatasetRef, or BadInput saying what is wrong."""
    try:
        return DatasetRef.parse(ref)
    except InvalidName as error:
        raise BadInput(str(error)) from None


@dataclass(frozen=True)
class SessionGrant:
    """What a session of ``user`` in ``project`` starts with; granted, audited (``key.wrap``) and wrapped once."""

    project: str
    user: str
    role: Role
    policy: Policy
    # The project's own datasets (by name), and the datasets shared into it and accepted (by owner and name).
    datasets: tuple[DatasetRef, ...]
    shares: tuple[DatasetRef, ...]
    # Single use, response-wrapped: unwraps once, on the node, to a token that reads exactly these keys.
    wrapped: WrappedSession
    ttl: int
    # The Unix account the session or run runs as (never the person's own: one principal per person per
    # project, from the database), and the project's group, its primary group.
    principal: str
    group: str

    @property
    def mounted_datasets(self) -> tuple[DatasetRef, ...]:
        """Every dataset the session mounts read-only, in the order the token and the job spec list them."""
        return self.datasets + self.shares


@dataclass(frozen=True)
class Actor:
    """Who acts: the admin running the command, a user the admin acts as (``--as``), or a person signed in to
    a front end (:meth:`signed_in`)."""

    admin: str | None
    as_user: str | None = None
    # The front end the request came through (``portal``), recorded in every event; None: the command line.
    via: str | None = None

    @classmethod
    def signed_in(cls, username: str, *, is_admin: bool, via: str) -> Actor:
        """A person acting for themselves through a front end: a hub admin, or with their own rights only."""
        return cls(admin=username, via=via) if is_admin else cls(admin=None, as_user=username, via=via)

    @property
    def subject(self) -> Subject:
        if self.as_user is not None:
            return Subject(self.as_user, is_admin=False)
        if self.admin is None:
            raise ValueError("an Actor needs an admin or a user to act as")
        return Subject(self.admin, is_admin=True)

    @property
    def on_behalf_of(self) -> str | None:
        """The admin behind ``--as USER`` (None when a person acts for themselves)."""
        return self.admin if self.as_user is not None else None


class ProjectService(RunService, NotebookService):
    """The one door to the projects database (runs: ``RunService``, projects/runs.py; the index of notebook
    parameter names: ``NotebookService``, projects/notebooks.py)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        keys: KeyStore,
        audit: AuditLog,
        store_root: Path,
        actor: Actor,
        accounts: AccountProvisioner | None = None,
    ) -> None:
        self.sessions = sessions
        self.keys = keys
        self.audit = audit
        self.store_root = Path(store_root)
        self.layout = StoreLayout(self.store_root)
        self.actor = actor
        # What makes the principals' accounts (ProjectAccounts.make_provisioner()); by default they are only
        # recorded, and sessions refuse to start until the site's directory (or `account sync`) makes them.
        self.accounts = accounts if accounts is not None else RecordOnly()

    # --- plumbing ------------------------------------------------------------------------------
    @contextmanager
    def _transaction(self) -> Iterator[Session]:
        with self.sessions() as session, session.begin():
            yield session

    def _event(self, action: Action | str, obj: str, outcome: str, project: str | None, reason: str, **details) -> None:
        if self.actor.via is not None:
            details["via"] = self.actor.via
        self.audit.append(
            actor=self.actor.subject.username,
            on_behalf_of=self.actor.on_behalf_of,
            action=action.value if isinstance(action, Action) else action,
            obj=obj,
            outcome=outcome,
            project=project,
            reason=reason,
            **details,
        )

    def _bad_input(self, action: Action, obj: str, project: str | None, error: Exception) -> BadInput:
        self._event(action, obj, "failed", project, str(error))
        return error if isinstance(error, BadInput) else BadInput(str(error))

    def _authorize(self, session: Session, action: Action, project: Project | None, obj: str) -> None:
        role = self._role(session, project, self.actor.subject.username) if project else None
        decision = decide(self.actor.subject, action, role, self._policy(project) if project else None)
        if not decision:
            self._event(action, obj, "denied", project.name if project else None, decision.reason)
            refusal = NotMember if project is not None and role is None and not self.actor.subject.is_admin else Refused
            raise refusal(f"{self.actor.subject.username} may not {action.value} on {obj}: {decision.reason}")

    def _project(self, session: Session, name: str, action: Action) -> Project:
        project = session.scalar(select(Project).where(Project.name_key == name_key(name)))
        if project is None or project.name != name:
            # Exact names only: a look-alike must not act on another project.
            error = NotFound(
                f"project {name!r} does not exist (see `securehpc project list`)", kind="project", name=name
            )
            raise self._bad_input(action, f"project:{name}", None, error)
        return project

    @staticmethod
    def _role(session: Session, project: Project, username: str) -> Role | None:
        member = session.scalar(select(Member).where(Member.project_id == project.id, Member.username == username))
        return Role(member.role) if member else None

    @staticmethod
    def _policy(project: Project) -> Policy:
        return Policy.from_dict(project.policy or {})

    @staticmethod
    def _own_datasets(project: Project) -> list[DatasetRef]:
        return [DatasetRef(project.name, d.name) for d in sorted(project.datasets, key=lambda d: d.name)]

    @staticmethod
    def _accepted_shares_into(session: Session, project: Project) -> list[DatasetRef]:
        rows = session.execute(
            select(Project.name, Dataset.name)
            .join(Dataset, Dataset.project_id == Project.id)
            .join(Share, Share.dataset_id == Dataset.id)
            .where(Share.target_project_id == project.id, Share.state == "accepted")
            .order_by(Project.name, Dataset.name)
        )
        return [DatasetRef(owner, dataset) for owner, dataset in rows]

    # --- projects ------------------------------------------------------------------------------
    def create_project(self, name: str, owner: str) -> dict:
        obj = f"project:{name}"
        undo: list[Callable[[], None]] = []
        with self._transaction() as session:
            self._authorize(session, Action.PROJECT_CREATE, None, obj)
            try:
                validate_name("project", name)
                validate_username(owner)
            except (InvalidName, BadInput) as error:
                raise self._bad_input(Action.PROJECT_CREATE, obj, None, error) from None
            existing = session.scalar(select(Project).where(Project.name_key == name_key(name)))
            if existing is not None:
                error = Conflict(
                    f"project {name!r} collides with existing project {existing.name!r}: choose another name"
                )
                raise self._bad_input(Action.PROJECT_CREATE, obj, None, error)
            project_dir = self.layout.project_dir(name)
            if project_dir.exists():
                error = Conflict(
                    f"{project_dir} exists but no project {name!r} is registered (another database, or an "
                    "interrupted create?): check it, and remove it if it is not needed"
                )
                raise self._bad_input(Action.PROJECT_CREATE, obj, None, error)
            try:
                # Fails fast when OpenBao is down or sealed, before anything is created.
                self.keys.ensure_mount()
                project = Project(name=name, name_key=name_key(name), created_by=self.actor.subject.username, policy={})
                session.add(project)
                session.add(
                    Member(
                        project=project,
                        username=owner,
                        role=Role.DATA_OWNER.value,
                        added_by=self.actor.subject.username,
                    )
                )
                session.flush()
                # The owner's principal and the project's group, before the workspace: the group owns it.
                principal = self._ensure_principal(session, project, owner)
                # Build the project's folder aside and store the key last: an interruption leaves only an
                # unregistered folder of ciphertext whose key was never stored.
                remove_stale_incoming(project_dir.parent)
                with incoming_dir(project_dir.parent) as incoming:
                    incoming.mkdir(mode=0o755)
                    StoreLayout.datasets_in(incoming).mkdir(mode=0o755)
                    key = secrets.token_bytes(32)
                    workspace = StoreLayout.workspace_in(incoming)
                    init_store(workspace, key)
                    # The project's principals work in it together; nobody else may list it. A group the
                    # directory does not show yet: nobody but root until `account sync` gives it to the group.
                    if not principals.share_workspace(workspace, project.unix_group):
                        workspace.chmod(0o700)
                    self.keys.create_project_key(name, key)
                    undo.append(lambda: self.keys.delete_project_key(name))
                    self.keys.write_project_policy(name, [])
                    undo.append(lambda: self.keys.delete_project_policy(name))
                    os.rename(incoming, project_dir)
                    undo.append(lambda: shutil.rmtree(project_dir, ignore_errors=True))
            except Exception as error:
                _run_undo(undo)
                self._event(Action.PROJECT_CREATE, obj, "failed", name, _short(error))
                raise
        self._event(
            Action.PROJECT_CREATE, obj, "allowed", name, "hub admin", owner=owner, principal=principal,
            group=project.unix_group,
        )  # fmt: skip
        return {"project": name, "owner": owner, "principal": principal, "group": project.unix_group}

    def list_projects(self) -> list[dict]:
        subject = self.actor.subject
        # One query, the caller's role beside each project (not one query per project: an admin lists them all).
        query = (
            select(Project.name, Member.role)
            .outerjoin(Member, (Member.project_id == Project.id) & (Member.username == subject.username))
            .order_by(Project.name)
        )
        if not subject.is_admin:
            query = query.where(Member.id.is_not(None))
        with self.sessions() as session:
            result = [{"name": name, "role": role} for name, role in session.execute(query)]
        self._event(
            "project.list",
            "projects",
            "allowed",
            None,
            "own projects" if not subject.is_admin else "hub admin",
            count=len(result),
        )
        return result

    def my_projects(self, running: Callable[[dict[str, set[str]]], dict[str, list[dict]]]) -> dict:
        """Everything the portal's start page (My projects) shows of each project the caller is a member of:
        one database session with a fixed number of queries however many projects, and one ``project.list``
        event naming them (not a ``project.show`` and a ``session.list`` per project).

        ``{"projects": [...], "total": N}``, by project name: the caller's ``role``, the ``policy``
        (``Policy.as_dict``), its own ``datasets`` and the accepted shares into it (``shared_in``), as
        :meth:`show_project` gives them, its ``members`` (names) and its running ``sessions``. ``total``: the
        projects :meth:`list_projects` gives the caller (hub admins: all of them; here, as everyone, they get
        only those they are members of). ``running({project: members})`` asks the hub once for the servers
        named after those projects of their members (``{project: sessions}``), as in :meth:`list_sessions`.
        """
        subject = self.actor.subject
        mine = select(Member.project_id).where(Member.username == subject.username).scalar_subquery()
        with self.sessions() as session:
            rows = session.execute(
                select(Project.id, Project.name, Project.policy, Member.role)
                .join(Member, (Member.project_id == Project.id) & (Member.username == subject.username))
                .order_by(Project.name)
            ).all()
            members: dict[int, list[str]] = {}
            for project_id, username in session.execute(
                select(Member.project_id, Member.username).where(Member.project_id.in_(mine))
            ):
                members.setdefault(project_id, []).append(username)
            datasets: dict[int, list[str]] = {}
            for project_id, dataset in session.execute(
                select(Dataset.project_id, Dataset.name).where(Dataset.project_id.in_(mine))
            ):
                datasets.setdefault(project_id, []).append(dataset)
            shared_in: dict[int, list[str]] = {}
            for project_id, owner_name, dataset in session.execute(
                select(Share.target_project_id, Project.name, Dataset.name)
                .join(Dataset, Dataset.id == Share.dataset_id)
                .join(Project, Project.id == Dataset.project_id)
                .where(Share.target_project_id.in_(mine), Share.state == "accepted")
                .order_by(Project.name, Dataset.name)
            ):
                shared_in.setdefault(project_id, []).append(str(DatasetRef(owner_name, dataset)))
            total = session.scalar(select(func.count(Project.id))) if subject.is_admin else len(rows)
        projects = []
        for project_id, name, stored_policy, role in rows:
            policy = Policy.from_dict(stored_policy or {})
            # Decided as show_project and list_sessions decide (members may read both): a project that either
            # would refuse is not shown.
            if not all(decide(subject, action, Role(role), policy) for action in MY_PROJECTS_READS):
                continue
            projects.append(
                {
                    "name": name,
                    "role": role,
                    "policy": policy.as_dict(),
                    "datasets": sorted(datasets.get(project_id, [])),
                    "shared_in": shared_in.get(project_id, []),
                    "members": sorted(members.get(project_id, [])),
                }
            )
        found = running({p["name"]: set(p["members"]) for p in projects}) if projects else {}
        for project in projects:
            project["sessions"] = found.get(project["name"], [])
        names = [p["name"] for p in projects]
        self._event(
            "project.list", "projects", "allowed", None, "own projects", count=len(names),
            projects=names[:MAX_NAMED_PROJECTS], sessions=sum(len(p["sessions"]) for p in projects),
        )  # fmt: skip
        return {"projects": projects, "total": total}

    def show_project(self, name: str) -> dict:
        with self.sessions() as session:
            project = self._project(session, name, Action.PROJECT_SHOW)
            self._authorize(session, Action.PROJECT_SHOW, project, f"project:{name}")
            shared_out = session.execute(
                select(Dataset.name, Project.name, Share.state)
                .join(Share, Share.dataset_id == Dataset.id)
                .join(Project, Project.id == Share.target_project_id)
                .where(Dataset.project_id == project.id)
                .order_by(Dataset.name, Project.name)
            )
            result = {
                "name": project.name,
                "created_at": project.created_at.isoformat(timespec="seconds") + "Z",
                "created_by": project.created_by,
                "members": [
                    {"user": m.username, "role": m.role} for m in sorted(project.members, key=lambda m: m.username)
                ],
                "datasets": sorted(d.name for d in project.datasets),
                "shared_out": [{"dataset": d, "with": p, "state": s} for d, p, s in shared_out],
                "shared_in": [str(ref) for ref in self._accepted_shares_into(session, project)],
                "policy": self._policy(project).as_dict(),
            }
        self._event(Action.PROJECT_SHOW, f"project:{name}", "allowed", name, "member or admin")
        return result

    # --- members -------------------------------------------------------------------------------
    def add_member(self, project_name: str, username: str, role: str) -> dict:
        obj = f"member:{project_name}/{username}"
        with self._transaction() as session:
            project = self._project(session, project_name, Action.MEMBER_ADD)
            self._authorize(session, Action.MEMBER_ADD, project, obj)
            try:
                validate_username(username)
                new_role = Role.parse(role)
            except (BadInput, ValueError) as error:
                raise self._bad_input(Action.MEMBER_ADD, obj, project_name, error) from None
            member = session.scalar(select(Member).where(Member.project_id == project.id, Member.username == username))
            old_role = member.role if member else None
            if member is None:
                session.add(
                    Member(
                        project=project, username=username, role=new_role.value, added_by=self.actor.subject.username
                    )
                )
            else:
                if old_role == Role.DATA_OWNER.value and new_role is not Role.DATA_OWNER:
                    self._refuse_last_owner(session, project, username, Action.MEMBER_ADD, obj)
                member.role = new_role.value
            try:
                principal = self._ensure_principal(session, project, username)
            except BadInput as error:
                raise self._bad_input(Action.MEMBER_ADD, obj, project_name, error) from None
            except Exception as error:
                self._event(Action.MEMBER_ADD, obj, "failed", project_name, _short(error))
                raise
        self._event(
            Action.MEMBER_ADD,
            obj,
            "allowed",
            project_name,
            "data owner or admin",
            role=new_role.value,
            previous_role=old_role,
            principal=principal,
        )
        return {"project": project_name, "user": username, "role": new_role.value, "previous_role": old_role,
                "principal": principal}  # fmt: skip

    def remove_member(self, project_name: str, username: str) -> dict:
        obj = f"member:{project_name}/{username}"
        with self._transaction() as session:
            project = self._project(session, project_name, Action.MEMBER_REMOVE)
            self._authorize(session, Action.MEMBER_REMOVE, project, obj)
            member = session.scalar(select(Member).where(Member.project_id == project.id, Member.username == username))
            if member is None:
                error = NotFound(f"{username!r} is not a member of project {project_name!r}")
                raise self._bad_input(Action.MEMBER_REMOVE, obj, project_name, error)
            if member.role == Role.DATA_OWNER.value:
                self._refuse_last_owner(session, project, username, Action.MEMBER_REMOVE, obj)
            session.delete(member)
            try:
                # Locked, not deleted: the name stays taken and the files keep their owner.
                principal = principals.lock_principal(session, project, username, self.accounts)
            except Exception as error:
                self._event(Action.MEMBER_REMOVE, obj, "failed", project_name, _short(error))
                raise
        self._event(Action.MEMBER_REMOVE, obj, "allowed", project_name, "data owner or admin", role=member.role,
                    locked_principal=principal)  # fmt: skip
        return {"project": project_name, "user": username, "removed_role": member.role, "locked_principal": principal}

    def _ensure_principal(self, session: Session, project: Project, username: str) -> str:
        """``username``'s principal in ``project``, recorded and made (``projects/accounts.py``); its name."""
        try:
            return principals.ensure_principal(
                session, project, username, self.accounts, self.actor.subject.username
            ).name
        except (principals.PrincipalClash, InvalidAccountName) as error:
            raise Conflict(str(error)) from None

    def _refuse_last_owner(self, session: Session, project: Project, username: str, action: Action, obj: str) -> None:
        owners = session.scalars(
            select(Member.username).where(Member.project_id == project.id, Member.role == Role.DATA_OWNER.value)
        ).all()
        if owners == [username]:
            error = Conflict(f"{username!r} is the last data owner of {project.name!r}: add another data owner first")
            raise self._bad_input(action, obj, project.name, error)

    # --- policy --------------------------------------------------------------------------------
    def show_policy(self, project_name: str) -> dict:
        with self.sessions() as session:
            project = self._project(session, project_name, Action.POLICY_SHOW)
            self._authorize(session, Action.POLICY_SHOW, project, f"policy:{project_name}")
            policy = self._policy(project).as_dict()
        self._event(Action.POLICY_SHOW, f"policy:{project_name}", "allowed", project_name, "member or admin")
        return policy

    def set_policy(self, project_name: str, assignments: list[str]) -> dict:
        """Apply ``KEY=VALUE`` settings (hub admins); the event records the policy before and after."""
        return self.change_policy(project_name, assignments)["policy"]

    def change_policy(self, project_name: str, assignments: list[str], *, dry_run: bool = False) -> dict:
        """``{"policy": after, "previous": before, "changed": [keys]}``; ``dry_run``: decide and validate only
        (a preview: nothing is written, and only a refusal or bad input is recorded)."""
        obj = f"policy:{project_name}"
        with self._transaction() as session:
            project = self._project(session, project_name, Action.POLICY_SET)
            self._authorize(session, Action.POLICY_SET, project, obj)
            before = self._policy(project)
            try:
                policy = before.with_settings(assignments)
            except InvalidPolicy as error:
                raise self._bad_input(Action.POLICY_SET, obj, project_name, error) from None
            if not dry_run:
                project.policy = policy.as_dict()
        after, previous = policy.as_dict(), before.as_dict()
        changed = sorted({a.partition("=")[0].strip() for a in assignments})  # the settings given, as typed
        if not dry_run:
            self._event(
                Action.POLICY_SET, obj, "allowed", project_name, "hub admin",
                changed=changed, policy=after, previous=previous,
            )  # fmt: skip
        return {"policy": after, "previous": previous, "changed": changed}

    # --- datasets ------------------------------------------------------------------------------
    def import_dataset(self, project_name: str, dataset: str, source: Path) -> dict:
        obj = f"dataset:{project_name}/{dataset}"
        undo: list[Callable[[], None]] = []
        with self._transaction() as session:
            project = self._project(session, project_name, Action.DATASET_IMPORT)
            self._authorize(session, Action.DATASET_IMPORT, project, obj)
            try:
                validate_name("dataset", dataset)
            except InvalidName as error:
                raise self._bad_input(Action.DATASET_IMPORT, obj, project_name, error) from None
            existing = session.scalar(
                select(Dataset).where(Dataset.project_id == project.id, Dataset.name_key == name_key(dataset))
            )
            if existing is not None:
                error = Conflict(
                    f"dataset {dataset!r} collides with {project_name}/{existing.name}: choose another name"
                )
                raise self._bad_input(Action.DATASET_IMPORT, obj, project_name, error)
            try:
                check_source(Path(source))
            except SourceError as error:
                raise self._bad_input(Action.DATASET_IMPORT, obj, project_name, error) from None
            target = self.layout.dataset(project_name, dataset)
            if target.exists():
                error = Conflict(f"{target} exists but no dataset {dataset!r} is registered: check it and remove it")
                raise self._bad_input(Action.DATASET_IMPORT, obj, project_name, error)
            remove_stale_incoming(target.parent)
            try:
                self.keys.ensure_mount()  # fail fast (OpenBao down or sealed) before copying anything
                # The key lives in memory during the copy and is stored only once the ciphertext is verified.
                key = secrets.token_bytes(32)
                result = import_folder(Path(source), target, key)
                undo.append(lambda: shutil.rmtree(target, ignore_errors=True))
                self.keys.create_dataset_key(project_name, dataset, key)
                undo.append(lambda: self.keys.delete_dataset_key(project_name, dataset))
                session.add(
                    Dataset(
                        project=project,
                        name=dataset,
                        name_key=name_key(dataset),
                        created_by=self.actor.subject.username,
                        file_count=result.file_count,
                        size_bytes=result.size_bytes,
                        manifest_sha256=result.manifest_sha256,
                    )
                )
                session.flush()
            except Exception as error:
                _run_undo(undo)
                self._event(Action.DATASET_IMPORT, obj, "failed", project_name, _short(error))
                raise
        self._event(
            Action.DATASET_IMPORT, obj, "allowed", project_name, "data owner or admin",
            files=result.file_count, bytes=result.size_bytes, manifest_sha256=result.manifest_sha256,
        )  # fmt: skip
        return {"dataset": str(DatasetRef(project_name, dataset)), "files": result.file_count,
                "bytes": result.size_bytes, "manifest_sha256": result.manifest_sha256}  # fmt: skip

    def list_datasets(self, project_name: str) -> dict:
        with self.sessions() as session:
            project = self._project(session, project_name, Action.DATASET_LIST)
            self._authorize(session, Action.DATASET_LIST, project, f"datasets:{project_name}")
            own = [
                {"dataset": d.name, "files": d.file_count, "bytes": d.size_bytes, "manifest_sha256": d.manifest_sha256,
                 "imported_at": _time(d.created_at), "imported_by": d.created_by}
                for d in sorted(project.datasets, key=lambda d: d.name)
            ]  # fmt: skip
            offers = session.execute(
                select(Project.name, Dataset.name, Share.state)
                .join(Dataset, Dataset.project_id == Project.id)
                .join(Share, Share.dataset_id == Dataset.id)
                .where(Share.target_project_id == project.id, Share.state != "revoked")
                .order_by(Project.name, Dataset.name)
            )
            shared_in = [{"dataset": str(DatasetRef(o, d)), "state": s} for o, d, s in offers]
        self._event(Action.DATASET_LIST, f"datasets:{project_name}", "allowed", project_name, "member or admin")
        return {"project": project_name, "datasets": own, "shared_in": shared_in}

    def list_shares(self, project_name: str, state: str | None = None) -> dict:
        """Shares of the project's datasets with other projects (``offered``) and of other projects' datasets
        with it (``received``), each with its state and who offered and decided when; ``state`` filters."""
        if state is not None and state not in SHARE_STATES:
            raise BadInput(f"share state {state!r} is not one of {', '.join(SHARE_STATES)}")
        with self.sessions() as session:
            project = self._project(session, project_name, Action.DATASET_LIST)
            self._authorize(session, Action.DATASET_LIST, project, f"shares:{project_name}")
            owner = aliased(Project)
            query = (
                select(Share, Dataset.name, owner.name, Project.name)
                .join(Dataset, Share.dataset_id == Dataset.id)
                .join(owner, Dataset.project_id == owner.id)
                .join(Project, Share.target_project_id == Project.id)
                .order_by(owner.name, Dataset.name, Project.name)
            )
            if state is not None:
                query = query.where(Share.state == state)
            offered = session.execute(query.where(owner.id == project.id)).all()
            received = session.execute(query.where(Project.id == project.id)).all()

            def row(share: Share, dataset: str, source: str, target: str) -> dict:
                return {"dataset": str(DatasetRef(source, dataset)), "with": target, "state": share.state,
                        "offered_by": share.offered_by, "offered_at": _time(share.offered_at),
                        "decided_by": share.decided_by, "decided_at": _time(share.decided_at)}  # fmt: skip

            result = {"project": project_name, "offered": [row(*r) for r in offered],
                      "received": [row(*r) for r in received]}  # fmt: skip
        self._event(Action.DATASET_LIST, f"shares:{project_name}", "allowed", project_name, "member or admin")
        return result

    def _dataset(self, session: Session, ref: str, action: Action) -> tuple[Project, Dataset]:
        try:
            project_name, dataset_name = split_dataset_ref(ref)
        except BadInput as error:
            raise self._bad_input(action, f"dataset:{ref}", None, error) from None
        project = self._project(session, project_name, action)
        dataset = session.scalar(
            select(Dataset).where(Dataset.project_id == project.id, Dataset.name_key == name_key(dataset_name))
        )
        if dataset is None or dataset.name != dataset_name:
            error = NotFound(f"dataset {ref!r} does not exist (see `securehpc dataset list {project_name}`)")
            raise self._bad_input(action, f"dataset:{ref}", project_name, error)
        return project, dataset

    def share_dataset(self, ref: str, other: str) -> dict:
        obj = f"share:{ref}->{other}"
        with self._transaction() as session:
            project, dataset = self._dataset(session, ref, Action.DATASET_SHARE)
            self._authorize(session, Action.DATASET_SHARE, project, obj)
            target = self._project(session, other, Action.DATASET_SHARE)
            if target.id == project.id:
                raise self._bad_input(
                    Action.DATASET_SHARE, obj, project.name, BadInput(f"{ref} already belongs to {other}")
                )
            share = session.scalar(
                select(Share).where(Share.dataset_id == dataset.id, Share.target_project_id == target.id)
            )
            if share is not None and share.state != "revoked":
                error = Conflict(f"{ref} is already shared with {other} ({share.state})")
                raise self._bad_input(Action.DATASET_SHARE, obj, project.name, error)
            if share is None:
                share = Share(
                    dataset=dataset, target_project=target, state="pending", offered_by=self.actor.subject.username
                )
                session.add(share)
            else:
                share.state, share.offered_by, share.offered_at = "pending", self.actor.subject.username, utcnow()
                share.decided_by = share.decided_at = None
        self._event(
            Action.DATASET_SHARE, obj, "allowed", project.name, "data owner or admin", target=other, state="pending"
        )
        return {"dataset": ref, "with": other, "state": "pending"}

    def accept_share(self, other: str, ref: str) -> dict:
        obj = f"share:{ref}->{other}"
        with self._transaction() as session:
            target = self._project(session, other, Action.DATASET_ACCEPT)
            self._authorize(session, Action.DATASET_ACCEPT, target, obj)
            project, dataset = self._dataset(session, ref, Action.DATASET_ACCEPT)
            share = session.scalar(
                select(Share).where(Share.dataset_id == dataset.id, Share.target_project_id == target.id)
            )
            if share is None or share.state != "pending":
                state = share.state if share else "not offered"
                kind = NotFound if share is None else Conflict
                error = kind(f"{ref} has no pending offer to {other} ({state}): its data owner must share it first")
                raise self._bad_input(Action.DATASET_ACCEPT, obj, other, error)
            share.state, share.decided_by, share.decided_at = "accepted", self.actor.subject.username, utcnow()
            session.flush()
            self._rewrite_policy(session, target, Action.DATASET_ACCEPT, obj)
        self._event(
            Action.DATASET_ACCEPT,
            obj,
            "allowed",
            other,
            "data owner of the receiving project or admin",
            source=project.name,
        )
        return {"dataset": ref, "with": other, "state": "accepted"}

    def revoke_share(self, ref: str, other: str) -> dict:
        obj = f"share:{ref}->{other}"
        with self._transaction() as session:
            project, dataset = self._dataset(session, ref, Action.DATASET_REVOKE)
            self._authorize(session, Action.DATASET_REVOKE, project, obj)
            target = self._project(session, other, Action.DATASET_REVOKE)
            share = session.scalar(
                select(Share).where(Share.dataset_id == dataset.id, Share.target_project_id == target.id)
            )
            if share is None or share.state == "revoked":
                error = NotFound(f"{ref} is not shared with {other}")
                raise self._bad_input(Action.DATASET_REVOKE, obj, project.name, error)
            previous = share.state
            share.state, share.decided_by, share.decided_at = "revoked", self.actor.subject.username, utcnow()
            session.flush()
            if previous == "accepted":
                self._rewrite_policy(session, target, Action.DATASET_REVOKE, obj)
        self._event(
            Action.DATASET_REVOKE, obj, "allowed", project.name, "data owner or admin", target=other, previous=previous
        )
        return {"dataset": ref, "with": other, "state": "revoked", "previous": previous}

    def _rewrite_policy(self, session: Session, project: Project, action: Action, obj: str) -> None:
        """Give ``project``'s sessions exactly the dataset keys of its accepted shares (rolls back on error)."""
        try:
            self.keys.write_project_policy(project.name, self._accepted_shares_into(session, project))
        except Exception as error:
            self._event(action, obj, "failed", project.name, _short(error))
            raise

    # --- keys ----------------------------------------------------------------------------------
    def sync_keys(self) -> dict:
        """Rewrite every project's OpenBao policy and session token role from the database (admins only).

        For upgrades (projects set up before token roles existed have no role, and the hub cannot start
        their sessions until they get one) and after restoring OpenBao. Needs the provisioning token.
        """
        obj = "projects"
        # Policy setting is the admin-only decision closest to this one: it changes what sessions get.
        decision = decide(self.actor.subject, Action.POLICY_SET, None)
        if not decision:
            reason = "only hub admins may rewrite the projects' OpenBao policies"
            self._event("key.sync", obj, "denied", None, reason)
            raise Refused(f"{self.actor.subject.username} may not run key sync: {reason}")
        done: list[str] = []
        with self.sessions() as session:
            projects = session.scalars(select(Project).order_by(Project.name)).all()
            plans = [(p.name, self._accepted_shares_into(session, p)) for p in projects]
        try:
            for name, shares in plans:
                self.keys.write_project_policy(name, shares)
                done.append(name)
        except Exception as error:
            self._event("key.sync", obj, "failed", None, _short(error), projects=done)
            raise
        self._event("key.sync", obj, "allowed", None, "hub admin", projects=done)
        return {"projects": done}

    def wrap_session_key(self, project_name: str, user: str, ttl: int | None) -> dict:
        """A wrapped single-use token for USER's session in PROJECT (admins and tests; the spawner does this)."""
        grant = self.session_grant(project_name, user, ttl)
        return {
            "wrapped": grant.wrapped,
            "datasets": [str(ref) for ref in grant.mounted_datasets],
            "role": grant.role.value,
            "ttl": grant.ttl,
        }

    # --- sessions ------------------------------------------------------------------------------
    def session_grant(self, project_name: str, user: str, ttl: int | None = None) -> SessionGrant:
        """Everything a session of ``user`` in ``project_name`` starts with, and its wrapped session token.

        The acting admin (the hub, or an admin's ``key wrap``) must be allowed to wrap keys; ``user`` must be
        allowed to start a session there (membership and policy); ``ttl`` (default: the policy's ``key_ttl``)
        must lie within the policy; ``user`` must have an active principal there (the account the session runs
        as, from this database, never from a request). Then the token is wrapped for the project's own datasets
        and its accepted shares, and a ``key.wrap`` event records who got it and the principal. Refusals raise
        Refused or BadInput, audited.
        """
        obj = f"session-key:{project_name}/{user}"
        with self.sessions() as session:
            project = self._project(session, project_name, Action.KEY_WRAP)
            self._authorize(session, Action.KEY_WRAP, project, obj)
            policy = self._policy(project)
            role = self._role(session, project, user)
            member_decision = decide(Subject(user), Action.SESSION_START, role, policy)
            if not member_decision:
                self._event(Action.KEY_WRAP, obj, "denied", project_name, member_decision.reason)
                raise Refused(f"no session key for {user} in {project_name}: {member_decision.reason}")
            ttl = policy.key_ttl if ttl is None else ttl
            if not 1 <= ttl <= policy.key_ttl:
                error = BadInput(f"--ttl {ttl} is outside 1..{policy.key_ttl} seconds (the project's key_ttl)")
                raise self._bad_input(Action.KEY_WRAP, obj, project_name, error)
            principal = principals.active_principal(session, project, user)
            if principal is None or project.unix_group is None:
                reason = (
                    f"{user} has no project account (principal) in {project_name} yet: a hub admin runs "
                    "`securehpc account sync`"
                )
                self._event(Action.KEY_WRAP, obj, "denied", project_name, reason)
                raise Refused(f"no session key for {user} in {project_name}: {reason}")
            principal_name, group = principal.name, project.unix_group
            datasets = tuple(self._own_datasets(project))
            shares = tuple(self._accepted_shares_into(session, project))
        try:
            wrapped = self.keys.wrap_session(user, project_name, ttl, datasets=datasets + shares)
        except Exception as error:
            self._event(Action.KEY_WRAP, obj, "failed", project_name, _short(error))
            raise
        self._event(Action.KEY_WRAP, obj, "allowed", project_name, "hub admin", user=user, ttl=ttl, role=role.value,
                    principal=principal_name)  # fmt: skip
        return SessionGrant(project_name, user, role, policy, datasets, shares, wrapped, ttl, principal_name, group)

    # --- principals' accounts (projects/accounts.py) --------------------------------------------
    def sync_accounts(self) -> dict:
        """Make every member's principal and every project's group exist, lock the principals of people who
        left, and give each workspace's ciphertext folder to its project's group (admins only; idempotent).

        For projects from before principals, for a directory restored from backup, and for sites whose
        directory makes the accounts (``ProjectAccounts.provisioner = "none"``: this only records the names).
        """
        obj = "accounts"
        self._require_admin("account.sync", obj, "make project accounts")
        done: dict[str, list[str]] = {"principals": [], "locked": [], "workspaces": []}
        try:
            with self._transaction() as session:
                for project in session.scalars(select(Project).order_by(Project.name)).all():
                    members = {m.username for m in project.members}
                    for username in sorted(members):
                        done["principals"].append(self._ensure_principal(session, project, username))
                    if project.unix_group is None:
                        principals.ensure_group(session, project, self.accounts)
                    for principal in project.principals:
                        if principal.username not in members and principal.state != principals.LOCKED:
                            principals.lock_principal(session, project, principal.username, self.accounts)
                            done["locked"].append(principal.name)
                    if principals.share_workspace(self.layout.workspace(project.name), project.unix_group):
                        done["workspaces"].append(project.name)
        except Exception as error:
            self._event("account.sync", obj, "failed", None, _short(error), **done)
            raise
        self._event("account.sync", obj, "allowed", None, "hub admin", **done)
        return done

    def list_accounts(self, project_name: str | None = None) -> list[dict]:
        """Every principal (project, person, account, group, state): what a site's directory must hold
        (admins only)."""
        self._require_admin("account.list", f"accounts:{project_name or '*'}", "list project accounts")
        with self.sessions() as session:
            query = select(Project).order_by(Project.name)
            if project_name is not None:
                query = query.where(Project.id == self._project(session, project_name, Action.PROJECT_SHOW).id)
            rows = [
                {
                    "project": project.name,
                    "user": p.username,
                    "principal": p.name,
                    "group": project.unix_group,
                    "state": p.state,
                }
                for project in session.scalars(query).all()
                for p in sorted(project.principals, key=lambda p: p.username)
            ]
        self._event("account.list", f"accounts:{project_name or '*'}", "allowed", project_name, "hub admin",
                    count=len(rows))  # fmt: skip
        return rows

    def startable_projects(self, user: str) -> dict[str, Policy]:
        """The projects in which ``user`` may start a session, with their policies (the spawn form's choices).

        Not audited: it only shows a person their own projects, and every start is decided and audited again
        by :meth:`session_grant`.
        """
        with self.sessions() as session:
            rows = session.execute(
                select(Project, Member.role).join(Member).where(Member.username == user).order_by(Project.name)
            ).all()
            startable = {}
            for project, role in rows:
                policy = self._policy(project)
                if decide(Subject(user), Action.SESSION_START, Role(role), policy):
                    startable[project.name] = policy
            return startable

    def list_sessions(self, project_name: str, running: Callable[[set[str]], list[dict]]) -> list[dict]:
        """The project's running sessions (members and hub admins may see them).

        ``running(members)`` asks the hub for the servers named after the project of those users (the
        database knows the members, the hub the servers); this decides and records the read.
        """
        obj = f"sessions:{project_name}"
        with self.sessions() as session:
            project = self._project(session, project_name, Action.SESSION_LIST)
            self._authorize(session, Action.SESSION_LIST, project, obj)
            members = {member.username for member in project.members}
        result = running(members)
        self._event(Action.SESSION_LIST, obj, "allowed", project_name, "member or admin", count=len(result))
        return result

    def stop_session(self, project_name: str, user: str, stop: Callable[[], dict]) -> dict:
        """Stop ``user``'s session in the project (data owners and hub admins); ``stop()`` asks the hub to stop
        the server and returns what it stopped (raises NotFound when there is none)."""
        obj = f"session:{project_name}/{user}"
        with self.sessions() as session:
            project = self._project(session, project_name, Action.SESSION_STOP)
            self._authorize(session, Action.SESSION_STOP, project, obj)
        try:
            validate_username(user)
            stopped = stop()
        except BadInput as error:
            self._event(Action.SESSION_STOP, obj, "failed", project_name, str(error))
            raise
        except Exception as error:
            self._event(Action.SESSION_STOP, obj, "failed", project_name, _short(error))
            raise
        self._event(Action.SESSION_STOP, obj, "allowed", project_name, "data owner or admin", user=user, **stopped)
        return {"project": project_name, "user": user, **stopped}

    # --- the audit log -------------------------------------------------------------------------
    def read_audit(
        self,
        *,
        project: str | None = None,
        user: str | None = None,
        action: str | None = None,
        outcome: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> dict:
        """Events of the audit log, newest first, filtered; ``limit`` per page, ``before`` the ``seq`` to
        continue below (the answer's ``next``). Hub admins read everything; a data owner reads the events of
        their own project (``project`` is then required). A refusal is recorded; reading is not."""
        if project is None:
            decision = decide(self.actor.subject, Action.AUDIT_READ, None)
            if not decision:
                reason = f"{decision.reason} (a data owner reads the events of their project: name it)"
                self._event(Action.AUDIT_READ, "audit-log", "denied", None, reason)
                raise Refused(f"{self.actor.subject.username} may not read the whole audit log: {reason}")
        else:
            with self.sessions() as session:
                found = self._project(session, project, Action.PROJECT_AUDIT_READ)
                self._authorize(session, Action.PROJECT_AUDIT_READ, found, f"audit:{project}")
        if not 1 <= limit <= MAX_AUDIT_PAGE:
            raise BadInput(f"limit {limit} is outside 1..{MAX_AUDIT_PAGE}")

        def wanted(event: dict) -> bool:
            time = dt.datetime.strptime(event["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)
            people = {event["actor"], event["on_behalf_of"], event["details"].get("user")}
            return (
                (before is None or event["seq"] < before)
                and (project is None or event["project"] == project)
                and (user is None or user in people)
                and (action is None or event["action"] == action)
                and (outcome is None or event["outcome"] == outcome)
                and (since is None or time >= since)
                and (until is None or time < until)
            )

        # Newest first, back from the end of the log: a page costs the events read up to it, not the whole log.
        page: list[dict] = []
        with closing(self.audit.events_newest_first()) as newest_first:
            for event in newest_first:
                if wanted(event):
                    page.append(event)
                    if len(page) > limit:
                        break
        events = page[:limit]
        return {"events": events, "next": events[-1]["seq"] if len(page) > limit else None}

    def verify_audit(self) -> dict:
        """``audit verify`` and the current head (hub admins): whether the chain holds, and its last link."""
        decision = decide(self.actor.subject, Action.AUDIT_READ, None)
        if not decision:
            self._event(Action.AUDIT_READ, "audit-log", "denied", None, decision.reason)
            raise Refused(f"{self.actor.subject.username} may not verify the audit log: {decision.reason}")
        result = self.audit.verify()
        try:
            seq, digest = self.audit.head()
            head = {"seq": seq, "hash": digest}
        except AuditError:
            head = None  # missing or damaged at its end: ``problem`` says which
        return {"ok": result.ok, "events": result.lines, "first_bad_line": result.first_bad_line,
                "problem": result.problem, "head": head}  # fmt: skip

    def record_refusal(self, action: str, obj: str, reason: str, project: str | None = None) -> Refused:
        """Record a refusal a front end made before any operation (a token without the portal's scope, a form
        without its XSRF token) and return the Refused to raise."""
        self._event(action, obj, "denied", project, reason)
        return Refused(f"{self.actor.subject.username} may not {action} on {obj}: {reason}")

    # --- memberships, for the group sync (sync.py) -------------------------------------------
    def _require_admin(self, action: str, obj: str, what: str) -> None:
        if not self.actor.subject.is_admin:
            reason = f"only hub admins may {what}"
            self._event(action, obj, "denied", None, reason)
            raise Refused(f"{self.actor.subject.username} may not {what}: {reason}")

    def memberships_of(self, username: str) -> dict[str, tuple[str, str]]:
        """``{project: (role, added_by)}`` of every membership of ``username`` (hub admins only)."""
        self._require_admin("member.list", f"user:{username}", "read another person's memberships")
        with self.sessions() as session:
            rows = session.execute(
                select(Project.name, Member.role, Member.added_by)
                .join(Member, Member.project_id == Project.id)
                .where(Member.username == username)
            )
            return {name: (role, added_by) for name, role, added_by in rows}

    def existing_projects(self, names: Iterable[str]) -> set[str]:
        """Those of ``names`` that are projects, exactly as written (a look-alike of a project is not one)."""
        wanted = set(names)
        with self.sessions() as session:
            found = session.scalars(select(Project.name).where(Project.name_key.in_([name_key(n) for n in wanted])))
            return set(found) & wanted


def _time(value: dt.datetime | None) -> str | None:
    """A database time (naive UTC) as ISO 8601 with ``Z``, as the CLI prints it."""
    return None if value is None else value.isoformat(timespec="seconds") + "Z"


def _short(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".splitlines()[0][:300]


def _run_undo(undo: list[Callable[[], None]]) -> None:
    for step in reversed(undo):
        try:
            step()
        except Exception:  # best effort: report, keep undoing the rest
            log.exception("could not undo a step of a failed operation")
