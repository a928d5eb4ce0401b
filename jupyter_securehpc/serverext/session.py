"""The session policy file: who this server runs for, in which project, with which role and policy.

The node launcher writes it (outside the sandbox, from the hub's answer) and mounts it read-only into the
sandbox. It is JSON::

    {"project": "cardio", "user": "alice", "role": "data_scientist",
     "policy": {... Policy.as_dict() ...}}

Which roles may read data files as text is the policy's ``text_content_roles`` (``projects.policy``); what
counts as a data file is ``contents.py``. A top-level ``text_content_roles`` key (written by launchers before
the setting moved into the policy) can only narrow the policy's setting, never widen it. The decisions
themselves come from ``projects.authz.decide``; this module only reads the file and asks once, as the role
and policy cannot change during a session.
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
    # Roles an old-style top-level key still allows; None: no such key (the policy alone decides).
    text_narrowing: frozenset[Role] | None = None

    def decision(self, action: Action) -> Decision:
        """Ask the one place that decides (``projects.authz``); hub admins get no data rights here."""
        return decide(Subject(self.user), action, self.role, self.policy)

    @property
    def may_read_text(self) -> Decision:
        """May this role read data files whole as text (``Action.FILE_READ_TEXT``)?"""
        decision = self.decision(Action.FILE_READ_TEXT)
        if decision and self.text_narrowing is not None and self.role not in self.text_narrowing:
            return Decision(False, f"the session does not let {self.role.value} read data files as text")
        return decision


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
    narrowing = None
    if "text_content_roles" in data:
        text_roles = data["text_content_roles"]
        if not isinstance(text_roles, list) or not all(isinstance(name, str) for name in text_roles):
            raise SessionPolicyError(f"{source}: 'text_content_roles' must be a list of role names")
        try:
            narrowing = frozenset(Role.parse(name) for name in text_roles)
        except ValueError as err:
            raise SessionPolicyError(f"{source}: 'text_content_roles': {err}") from None
    return Session(data["project"], data["user"], role, policy, narrowing)


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
