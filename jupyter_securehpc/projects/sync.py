"""Project roles from the identity provider's groups: ``<prefix>PROJECT:ROLE`` becomes a membership.

At every login the authenticator hands the groups of the ID token here (``parse_project_groups``), the sync
compares them with the person's memberships (``GroupSync.plan``, pure ``plan_memberships``) and changes the
difference (``GroupSync.apply``), all through :class:`~.service.ProjectService`, which decides and audits
each change as the hub admin :data:`SYNC_ACTOR`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..vocabulary import InvalidName, validate_name
from .roles import Role

if TYPE_CHECKING:
    # Only for types: the login checks (parse_project_groups) do not need the service, the database or OpenBao.
    from .service import ProjectService

log = logging.getLogger(__name__)

# Recorded as the acting admin of memberships that the provider's groups manage; a membership whose
# ``added_by`` is this name was made by the sync, and only such memberships are removed by it.
SYNC_ACTOR = "oidc-group-sync"


class BadProjectGroups(ValueError):
    """Group strings that cannot become memberships; the message lists each and why."""


class UnknownProjects(BadProjectGroups):
    """Groups that name projects this hub does not have (``projects``: ``{project: role}`` of those groups)."""

    def __init__(self, projects: Mapping[str, Role]) -> None:
        super().__init__(f"groups name projects that do not exist: {', '.join(sorted(projects))}")
        self.projects = dict(projects)


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


class GroupSync:
    """Plans and applies one person's memberships through ``service`` (whose actor should be SYNC_ACTOR)."""

    def __init__(self, service: ProjectService, logger: logging.Logger | None = None) -> None:
        self.service = service
        # The hub passes its own logger, so that the sync's messages stand in the hub's log.
        self.log = logger or log

    def plan(self, username: str, wanted: Mapping[str, Role]) -> MembershipPlan:
        """What must change for ``username`` to have exactly the ``wanted`` roles; changes nothing.

        Raises UnknownProjects when a group names a project that does not exist (a directory mistake: the
        login is refused as a whole rather than applied in part).
        """
        unknown = set(wanted) - self.service.existing_projects(wanted)
        if unknown:
            raise UnknownProjects({p: wanted[p] for p in unknown})
        return plan_memberships(self.service.memberships_of(username), wanted, username)

    def apply(self, plan: MembershipPlan) -> None:
        """Make the plan's changes; each is decided and audited by the service."""
        from .service import BadInput

        service = self.service
        for project, role in plan.add.items():
            service.add_member(project, plan.username, role.value)
        for project, (_, role) in plan.change.items():
            try:
                service.add_member(project, plan.username, role.value)
            except BadInput as error:
                # The last data owner stays one (the service refused and audited it); the login goes on.
                self.log.warning("Project role of %s in %s not changed: %s", plan.username, project, error)
        for project in plan.remove:
            try:
                service.remove_member(project, plan.username)
            except BadInput as error:
                self.log.warning("%s not removed from %s: %s", plan.username, project, error)
        self.log.info(
            "Synced project roles of %s from the provider: added %s, changed %s, removed %s",
            plan.username, sorted(plan.add), sorted(plan.change), plan.remove,
        )  # fmt: skip
