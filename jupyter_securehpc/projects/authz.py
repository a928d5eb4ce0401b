"""May USER do ACTION in PROJECT? The one place that answers, from role and policy. Deny by default.

Every branch that allows something says why; anything not allowed by a branch is refused. The web pages,
the CLI (``--as USER``), the spawner and the server extension all ask here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .policy import Policy
from .roles import Role


class Action(str, enum.Enum):
    PROJECT_CREATE = "project.create"
    PROJECT_SHOW = "project.show"
    MEMBER_ADD = "member.add"
    MEMBER_REMOVE = "member.remove"
    POLICY_SHOW = "policy.show"
    POLICY_SET = "policy.set"
    DATASET_IMPORT = "dataset.import"
    DATASET_LIST = "dataset.list"
    DATASET_SHARE = "dataset.share"
    DATASET_ACCEPT = "dataset.accept"
    DATASET_REVOKE = "dataset.revoke"
    SESSION_START = "session.start"
    SESSION_LIST = "session.list"
    SESSION_STOP = "session.stop"
    KEY_WRAP = "key.wrap"
    WORKSPACE_WRITE = "workspace.write"
    FILE_DOWNLOAD = "file.download"
    FILE_UPLOAD = "file.upload"
    FILE_READ_TEXT = "file.read_text"
    TERMINAL_OPEN = "terminal.open"
    RELEASE_REQUEST = "release.request"
    RELEASE_REVIEW = "release.review"
    AUDIT_READ = "audit.read"
    RUN_SUBMIT = "run.submit"
    RUN_READ = "run.read"
    RUN_CANCEL = "run.cancel"
    PROJECT_AUDIT_READ = "audit.read_project"


@dataclass(frozen=True)
class Subject:
    """Who asks: a user name, and whether they are a hub admin."""

    username: str
    is_admin: bool = False


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str

    def __bool__(self) -> bool:
        return self.allowed


# Actions only hub admins may take, whatever their role in a project.
ADMIN_ONLY = frozenset({Action.PROJECT_CREATE, Action.POLICY_SET, Action.KEY_WRAP, Action.AUDIT_READ})

# Actions any member may take in their project: seeing what they work in, and who works in it now.
MEMBER_READ = frozenset(
    {Action.PROJECT_SHOW, Action.POLICY_SHOW, Action.DATASET_LIST, Action.SESSION_LIST, Action.RUN_READ}
)

# Actions the data owner takes for the project (Hopsworks' Data Owner).
DATA_OWNER = frozenset(
    {
        Action.MEMBER_ADD,
        Action.MEMBER_REMOVE,
        Action.DATASET_IMPORT,
        Action.DATASET_SHARE,
        Action.DATASET_ACCEPT,
        Action.DATASET_REVOKE,
        Action.RELEASE_REVIEW,
        # Stopping a member's running session (the portal), and reading the project's own audit trail.
        Action.SESSION_STOP,
        Action.PROJECT_AUDIT_READ,
        # Anyone's headless run in the project (whoever submitted a run may always cancel it: projects/runs.py).
        Action.RUN_CANCEL,
    }
)

# Management steps admins may take for a project too (everything a data owner does but reviewing).
ADMIN_MANAGES = DATA_OWNER - {Action.RELEASE_REVIEW}

# Actions of people who work on the data (owners and scientists; observers only look).
WORKERS = frozenset({Role.DATA_OWNER, Role.DATA_SCIENTIST})


def decide(subject: Subject, action: Action, role: Role | None, policy: Policy | None = None) -> Decision:
    """Decide for ``subject`` with ``role`` in the project (None: not a member) under ``policy``."""
    policy = policy or Policy()
    # Hub admins run the platform: they create projects, set policies, mint session keys, read the audit
    # log, and do every management step a data owner does (the CLI records which admin acted). They get no
    # data rights: sessions, downloads, uploads and release reviews stay with the project's members.
    if subject.is_admin and (action in ADMIN_ONLY or action in MEMBER_READ or action in ADMIN_MANAGES):
        return Decision(True, "hub admin")
    if action in ADMIN_ONLY:
        return Decision(False, f"only hub admins may {action.value}")
    if role is None:
        return Decision(False, f"{subject.username} is not a member of this project")
    # Members see their project, its policy and its datasets.
    if action in MEMBER_READ:
        return Decision(True, f"member ({role.value})")
    # The data owner manages members, datasets, shares and reviews releases.
    if action in DATA_OWNER:
        if role is Role.DATA_OWNER:
            return Decision(True, "data owner")
        return Decision(False, f"only a data owner may {action.value}; {subject.username} is {role.value}")
    # Every member may start a session; observers get a read-only workspace (WORKSPACE_WRITE below).
    if action is Action.SESSION_START:
        return Decision(True, f"member ({role.value})")
    # Owners and scientists write to the workspace and ask for releases; observers only read.
    if action in {Action.WORKSPACE_WRITE, Action.RELEASE_REQUEST}:
        if role in WORKERS:
            return Decision(True, role.value)
        return Decision(False, f"{role.value} may not {action.value}")
    # Headless runs write their outputs into the workspace: owners and scientists, where the policy allows runs.
    if action is Action.RUN_SUBMIT:
        if role not in WORKERS:
            return Decision(False, f"{role.value} may not {action.value}")
        if policy.max_concurrent_runs < 1:
            return Decision(False, "the project's policy allows no headless runs (max_concurrent_runs=0)")
        return Decision(True, role.value)
    # Downloads and uploads: exactly the roles the policy lists.
    if action is Action.FILE_DOWNLOAD:
        if role in policy.download_roles:
            return Decision(True, f"policy lets {role.value} download")
        return Decision(False, f"the project's policy does not let {role.value} download")
    # Reading a data file whole as text is a download by other means: the roles that may download, and the
    # roles the policy lists in text_content_roles (notebooks and code files are not asked about here).
    if action is Action.FILE_READ_TEXT:
        if role in policy.download_roles:
            return Decision(True, f"policy lets {role.value} download")
        if role in policy.text_content_roles:
            return Decision(True, f"policy lets {role.value} read files as text")
        return Decision(False, f"the project's policy does not let {role.value} read data files as text")
    if action is Action.FILE_UPLOAD:
        if role in policy.upload_roles:
            return Decision(True, f"policy lets {role.value} upload")
        return Decision(False, f"the project's policy does not let {role.value} upload")
    # Terminals: only where the policy enables them, and never for observers.
    if action is Action.TERMINAL_OPEN:
        if policy.terminals and role in WORKERS:
            return Decision(True, "policy enables terminals")
        return Decision(False, "terminals are off for this project or role")
    return Decision(False, f"{action.value} is not allowed")
