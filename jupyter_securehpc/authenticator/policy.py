"""What a login must show, as pure functions: an accepted second factor, and project roles from groups."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..projects.names import InvalidName, validate_name
from ..projects.roles import Role

# Recorded as the acting admin of memberships that the provider's groups manage; a membership whose
# ``added_by`` is this name was made by the sync, and only such memberships are removed by it.
SYNC_ACTOR = "oidc-group-sync"


def mfa_problem(claims: Mapping[str, Any], required_amr: Iterable[str], required_acr: Iterable[str]) -> str | None:
    """Why these ID token claims do not show an accepted second factor, or None when they do.

    Each configured check must pass: ``amr`` must share a value with ``required_amr`` (when that is not empty),
    and ``acr`` must be one of ``required_acr`` (when that is not empty).
    """
    required_amr, required_acr = set(required_amr), list(required_acr)
    if required_amr:
        amr = claims.get("amr")
        if amr is None:
            return "the ID token has no amr claim (the provider did not say how the person signed in)"
        if not isinstance(amr, list) or not all(isinstance(value, str) for value in amr):
            return f"the ID token's amr claim is not a list of strings: {amr!r}"
        if not required_amr.intersection(amr):
            return f"amr {sorted(amr)} contains none of the accepted methods {sorted(required_amr)}"
    if required_acr:
        acr = claims.get("acr")
        if acr is None:
            return "the ID token has no acr claim"
        if acr not in required_acr:
            return f"acr {acr!r} is not one of the accepted levels {required_acr}"
    return None


class BadProjectGroups(ValueError):
    """Group strings that cannot become memberships; the message lists each and why."""


def parse_project_groups(groups: Iterable[str], prefix: str) -> dict[str, Role]:
    """``{project: role}`` from group strings ``<prefix>PROJECT:ROLE``; other groups are ignored.

    Refuses (all problems at once) a malformed string, an invalid project name, an unknown role, and one
    project named with two different roles: guessing which one the directory meant could grant too much.
    """
    wanted: dict[str, Role] = {}
    sources: dict[str, str] = {}
    problems: list[str] = []
    for group in sorted(set(groups)):
        if not group.startswith(prefix):
            continue
        project, sep, role_name = group[len(prefix) :].rpartition(":")
        if not sep or not project or not role_name:
            problems.append(f"{group!r} is not {prefix}PROJECT:ROLE")
            continue
        try:
            validate_name("project", project)
            role = Role.parse(role_name)
        except (InvalidName, ValueError) as error:
            problems.append(f"{group!r}: {error}")
            continue
        if project in wanted and wanted[project] is not role:
            problems.append(f"{sources[project]!r} and {group!r} give project {project!r} two different roles")
            continue
        wanted[project], sources[project] = role, group
    if problems:
        raise BadProjectGroups("; ".join(problems))
    return wanted


@dataclass
class MembershipPlan:
    """What one login changes in the projects database for one user."""

    username: str
    add: dict[str, Role] = field(default_factory=dict)
    change: dict[str, tuple[str, Role]] = field(default_factory=dict)
    remove: list[str] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not (self.add or self.change or self.remove)


def plan_memberships(
    current: Mapping[str, tuple[str, str]], wanted: Mapping[str, Role], username: str
) -> MembershipPlan:
    """Compare ``current`` ``{project: (role, added_by)}`` with ``wanted``; only sync-made rows are removed.

    A membership a person added by hand (``securehpc member add``) stays when the groups do not name its
    project: the directory manages what it created, people manage the rest.
    """
    plan = MembershipPlan(username)
    for project, role in sorted(wanted.items()):
        if project not in current:
            plan.add[project] = role
        elif current[project][0] != role.value:
            plan.change[project] = (current[project][0], role)
    plan.remove = sorted(p for p, (_, added_by) in current.items() if p not in wanted and added_by == SYNC_ACTOR)
    return plan
