"""The session this server enforces: who it runs for, in which project, with which role and policy.

The session file itself (its JSON, its limits, its one strict parser) is the session contract's
(``jupyter_securehpc.session.sessionfile``); here it becomes the decisions the guard asks for.

Which roles may read data files as text is the policy's ``text_content_roles`` (``projects.policy``); what
counts as a data file is ``contents.py``. A top-level ``text_content_roles`` key (written by launchers before
the setting moved into the policy) can only narrow the policy's setting, never widen it. The decisions
themselves come from ``projects.authz.decide``; this module only reads the file and asks once, as the role
and policy cannot change during a session.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from jupyter_securehpc.projects.authz import Action, Decision, Subject, decide
from jupyter_securehpc.projects.policy import Policy
from jupyter_securehpc.projects.roles import Role
from jupyter_securehpc.session.sessionfile import SessionFile, SessionPolicyError

__all__ = ["Session", "SessionPolicyError", "load_session", "session_from_dict"]


@dataclass(frozen=True)
class Session:
    """What the server enforces, decided once at start from the session policy file."""

    project: str
    user: str
    role: Role
    policy: Policy
    # Roles an old-style top-level key still allows; None: no such key (the policy alone decides).
    text_narrowing: frozenset[Role] | None = None

    @classmethod
    def from_file(cls, file: SessionFile) -> Session:
        return cls(file.project, file.user, file.role, file.policy, file.text_narrowing)

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
    return Session.from_file(SessionFile.load(path))


def session_from_dict(data: object, source: str = "session policy") -> Session:
    """Check the parsed policy file; every problem names the key and what is expected."""
    return Session.from_file(SessionFile.from_dict(data, source))
