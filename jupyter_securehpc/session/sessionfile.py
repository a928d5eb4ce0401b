"""The session file: who a Jupyter server runs for, in which project, with which role and policy.

The node launcher writes it (outside the sandbox, from the signed spec: ``SessionSpec.session_file()``) and
mounts it read-only into the sandbox; the server extension reads it with ``load`` before it serves anything.
It is JSON::

    {"project": "cardio", "user": "alice", "role": "data_scientist",
     "policy": {... Policy.as_dict() ...}}

A top-level ``text_content_roles`` key (written by launchers before the setting moved into the policy) can
only narrow the policy's setting, never widen it (``serverext/session.py``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..projects.policy import InvalidPolicy, Policy
from ..projects.roles import Role
from .env import SESSION_POLICY_ENV

# A policy file is a few hundred bytes; refusing big files keeps a wrong path (a dataset) from being read.
MAX_SESSION_FILE_BYTES = 64 * 1024


class SessionPolicyError(ValueError):
    """The session file is missing or invalid: the server must not start."""


@dataclass(frozen=True)
class SessionFile:
    project: str
    user: str
    role: Role
    policy: Policy = field(default_factory=Policy)
    # Roles an old-style top-level key still allows; None: no such key (the policy alone decides).
    text_narrowing: frozenset[Role] | None = None

    def to_dict(self) -> dict:
        data = {"project": self.project, "user": self.user, "role": self.role.value, "policy": self.policy.as_dict()}
        if self.text_narrowing is not None:
            data["text_content_roles"] = sorted(role.value for role in self.text_narrowing)
        return data

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_dict()).encode()

    @classmethod
    def from_dict(cls, data: object, source: str = "session policy") -> SessionFile:
        """The session in untrusted data; every problem names the key and what is expected."""
        if not isinstance(data, dict):
            raise SessionPolicyError(f"{source}: expected a JSON object with project, user, role and policy")
        for key in ("project", "user", "role"):
            if not isinstance(data.get(key), str) or not data[key]:
                raise SessionPolicyError(f"{source}: {key!r} must be a non-empty string, got {data.get(key)!r}")
        try:
            role = Role.parse(data["role"])
        except ValueError as err:
            raise SessionPolicyError(f"{source}: {err}") from None
        if not isinstance(data.get("policy"), dict):
            raise SessionPolicyError(f"{source}: 'policy' must be an object as written by Policy.as_dict()")
        try:
            policy = Policy.from_untrusted(data["policy"])
        except InvalidPolicy as err:
            raise SessionPolicyError(f"{source}: {err}") from None
        narrowing = None
        if "text_content_roles" in data:
            text_roles = data["text_content_roles"]
            if not isinstance(text_roles, list) or not all(isinstance(name, str) for name in text_roles):
                raise SessionPolicyError(f"{source}: 'text_content_roles' must be a list of role names")
            try:
                narrowing = frozenset(Role.parse(name) for name in text_roles)
            except ValueError as err:
                raise SessionPolicyError(f"{source}: 'text_content_roles': {err}") from None
        return cls(data["project"], data["user"], role, policy, narrowing)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SessionFile:
        """Read and check the session file; SessionPolicyError says what is wrong and the fix."""
        path = Path(path)
        try:
            with open(path, "rb") as handle:
                raw = handle.read(MAX_SESSION_FILE_BYTES + 1)
        except OSError as err:
            raise SessionPolicyError(
                f"cannot read the session policy file {path}: {err.strerror}. The node launcher places it in the "
                f"sandbox and sets ${SESSION_POLICY_ENV} (or SecureHPCServerExtension.policy_file)"
            ) from None
        if len(raw) > MAX_SESSION_FILE_BYTES:
            raise SessionPolicyError(
                f"session policy file {path} is larger than {MAX_SESSION_FILE_BYTES} bytes: wrong file?"
            )
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as err:
            raise SessionPolicyError(f"session policy file {path} is not valid JSON: {err}") from None
        return cls.from_dict(data, source=str(path))
