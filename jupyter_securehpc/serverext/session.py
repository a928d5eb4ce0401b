"""The session policy file: who this server runs for, in which project, with which role and policy.

The node launcher writes it (outside the sandbox, from the hub's answer) and mounts it read-only into the
sandbox. It is JSON::

    {"project": "cardio", "user": "alice", "role": "data_scientist",
     "policy": {... Policy.as_dict() ...},
     "text_content_roles": ["data_owner", "data_scientist", "observer"]}

``text_content_roles`` is optional (default: every role): the roles that may read non-notebook files as
text through the contents API (what JupyterLab's editor does to open ``.py`` or ``.csv`` files). Roles with
download rights may always. The decisions themselves come from ``projects.authz.decide``; this module only
reads the file and asks once, as the role and policy cannot change during a session.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from pathlib import Path

from jupyter_securehpc.projects.authz import Action, Decision, Subject, decide
from jupyter_securehpc.projects.policy import Policy
from jupyter_securehpc.projects.roles import Role

# A policy file is a few hundred bytes; refusing big files keeps a wrong path (a dataset) from being read.
MAX_POLICY_BYTES = 64 * 1024


class SessionPolicyError(ValueError):
    """The session policy file is missing or invalid: the server must not start."""


@dataclass(frozen=True)
class Session:
    """What the server enforces, decided once at start from the session policy file."""

    project: str
    user: str
    role: Role
    policy: Policy
    text_content_roles: frozenset[Role]

    def decision(self, action: Action) -> Decision:
        """Ask the one place that decides (``projects.authz``); hub admins get no data rights here."""
        return decide(Subject(self.user), action, self.role, self.policy)

    @property
    def may_read_text(self) -> Decision:
        if self.decision(Action.FILE_DOWNLOAD):
            return Decision(True, f"policy lets {self.role.value} download")
        if self.role in self.text_content_roles:
            return Decision(True, f"policy lets {self.role.value} read files as text")
        return Decision(False, f"the project's policy does not let {self.role.value} read files as text")


def load_session(path: str | os.PathLike[str]) -> Session:
    """Read and check the session policy file; raise ``SessionPolicyError`` saying what is wrong and the fix."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_POLICY_BYTES + 1)
    except OSError as err:
        raise SessionPolicyError(
            f"cannot read the session policy file {path}: {err.strerror}. The node launcher places it in the "
            "sandbox and sets $SECUREHPC_SESSION_POLICY (or SecureHPCServerExtension.policy_file)"
        ) from None
    if len(raw) > MAX_POLICY_BYTES:
        raise SessionPolicyError(f"session policy file {path} is larger than {MAX_POLICY_BYTES} bytes: wrong file?")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise SessionPolicyError(f"session policy file {path} is not valid JSON: {err}") from None
    return session_from_dict(data, source=str(path))


def session_from_dict(data: object, source: str = "session policy") -> Session:
    """Check the parsed policy file; every problem names the key and what is expected."""
    if not isinstance(data, dict):
        raise SessionPolicyError(f"{source}: expected a JSON object with project, user, role and policy")
    for key in ("project", "user", "role"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise SessionPolicyError(f"{source}: {key!r} must be a non-empty string, got {data.get(key)!r}")
    try:
        role = Role.parse(data["role"])
    except ValueError as err:
        raise SessionPolicyError(f"{source}: {err}") from None
    policy_data = data.get("policy")
    if not isinstance(policy_data, dict):
        raise SessionPolicyError(f"{source}: 'policy' must be an object as written by Policy.as_dict()")
    _check_policy_types(policy_data, source)
    try:
        policy = Policy.from_dict(policy_data)
    except (TypeError, ValueError) as err:
        raise SessionPolicyError(f"{source}: invalid 'policy': {err}") from None
    text_roles = data.get("text_content_roles", [r.value for r in Role])
    if not isinstance(text_roles, list):
        raise SessionPolicyError(f"{source}: 'text_content_roles' must be a list of role names")
    try:
        text_content_roles = frozenset(Role.parse(str(name)) for name in text_roles)
    except ValueError as err:
        raise SessionPolicyError(f"{source}: 'text_content_roles': {err}") from None
    return Session(data["project"], data["user"], role, policy, text_content_roles)


def _check_policy_types(policy_data: dict, source: str) -> None:
    """``Policy.from_dict`` trusts its input (it reads our own database); this file crosses a boundary.

    Without this check ``"terminals": "false"`` would be a non-empty string, and so true.
    """
    defaults = Policy()
    for item in fields(Policy):
        if item.name not in policy_data:
            continue
        value, default = policy_data[item.name], getattr(defaults, item.name)
        if isinstance(default, frozenset):
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        elif isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, type(default))
        if not ok:
            expected = "a list of role names" if isinstance(default, frozenset) else type(default).__name__
            raise SessionPolicyError(f"{source}: policy {item.name!r} must be {expected}, got {value!r}")
