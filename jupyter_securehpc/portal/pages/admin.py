"""The hub admins' pages (``<prefix>admin``): every project, project creation, the policy editor and the audit
viewer. People without the portal's admin scope get a 403 page, and their attempt is an audit event.

The policy editor shows each setting with its help, kind and allowed range (``projects/policy.py``:
``describe()``); a change is previewed first (before and after of each setting that changes, nothing written),
then saved. A save whose preview was made against a policy that has changed since shows the preview again.
"""

from __future__ import annotations

import hashlib
import json
import re

from ...audit import OUTCOMES
from ...projects.policy import InvalidPolicy, Policy, describe
from ..api import common
from ..errors import ApiError
from .common import ROLE_NAMES, ROLES, Page, minutes
from .project import audit_position

AUDIT_PAGE = 50
_ACTION = re.compile(r"[A-Za-z0-9._-]{1,64}")


class AdminPage(Page):
    async def get(self) -> None:
        await self.require_admin("the admin pages")
        await self.show()

    async def show(self, *, errors: dict | None = None, values: dict | None = None) -> None:
        projects = await self.call("list_projects")
        self.render_template("admin.html", projects=projects, errors=errors or {}, values=values or {}, section="admin")


class CreateProjectPage(AdminPage):
    async def post(self) -> None:
        await self.require_admin("creating projects")
        name, owner = self.field("name", 100), self.field("owner")
        try:
            name, owner = common.project_name(name, "project name"), common.user_name(owner, "data owner")
            await self.call("create_project", name, owner)
        except ApiError as error:
            if error.status not in (400, 409):
                raise
            self.set_status(error.status)
            await self.show(errors={"create": error.message}, values={"name": name, "owner": owner})
            return
        self.done(f"Project {name} is created; {owner} is its data owner.", "projects", name)


# --- the policy editor -----------------------------------------------------------------------------------------


def digest(policy: dict) -> str:
    """Which policy a preview was made against (a save checks that it is still the one in effect)."""
    return hashlib.sha256(json.dumps(policy, sort_keys=True).encode()).hexdigest()[:16]


def form_value(value: object) -> str | list[str]:
    """A policy value as the editor's field shows it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return list(value)
    return str(value)


def shown(key: str, value: object) -> str:
    """A policy value for people (the preview's before and after)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(ROLE_NAMES.get(v, v) for v in value) or "nobody"
    if key == "max_wall_time" and isinstance(value, int):
        return minutes(value) if value < 60 else f"{minutes(value)} ({value} min)"
    return str(value)


def differences(result: dict) -> list[str]:
    """The settings whose value a change (``change_policy``'s answer) really changes, in the editor's order."""
    return [key for key in describe() if result["policy"].get(key) != result["previous"].get(key)]


def field_errors(assignments: list[str]) -> dict[str, str]:
    """Each bad setting's reason, from policy.py's own parsers (for showing them beside their fields)."""
    errors = {}
    for assignment in assignments:
        try:
            Policy().with_settings([assignment])
        except InvalidPolicy as error:
            errors[assignment.partition("=")[0]] = str(error)
    return errors


class PolicyPage(Page):
    """``admin/projects/NAME/policy``: GET the editor; POST ``step=preview`` (from the editor), ``step=edit``
    (back from the preview, values kept) or ``step=save`` (from the preview)."""

    async def get(self, project: str) -> None:
        await self.require_admin("the policy editor")
        project = self.project_arg(project)
        current = await self.call("show_policy", project, about=project)
        self.editor(project, current, {key: form_value(value) for key, value in current.items()})

    def editor(self, project: str, current: dict, values: dict, errors: dict | None = None,
               problem: str | None = None, info: str | None = None) -> None:  # fmt: skip
        self.render_template(
            "policy.html", project_name=project, settings=describe(), current=current, values=values,
            errors=errors or {}, problem=problem, info=info, shown=shown,
        )  # fmt: skip

    def typed(self) -> tuple[dict, list[str]]:
        """The editor's fields as typed (to show again) and as ``KEY=VALUE`` assignments."""
        values: dict[str, str | list[str]] = {}
        assignments = []
        on_form = set(self.get_body_arguments("fields"))
        for key, info in describe().items():
            if key not in on_form:
                continue
            if info["kind"] == "roles":
                chosen = [role for role in self.get_body_arguments(key) if role]
                values[key] = chosen
                unknown = [role for role in chosen if role not in ROLES]
                text = ",".join(chosen) or "none"
                assignments.append(f"{key}={text}" if not unknown else f"{key}={','.join(unknown)}")
            else:
                values[key] = self.field(key, 100)
                assignments.append(f"{key}={values[key]}")
        return values, assignments

    async def post(self, project: str) -> None:
        await self.require_admin("the policy editor")
        project = self.project_arg(project)
        step = self.get_body_argument("step", "preview")
        current = await self.call("show_policy", project, about=project)
        if step == "edit":
            values = {key: form_value(value) for key, value in current.items()}
            for assignment in self.get_body_arguments("set"):
                key, _, text = assignment.partition("=")
                if key not in values:
                    continue
                if isinstance(values[key], list):
                    values[key] = [] if text == "none" else [role for role in text.split(",") if role]
                else:
                    values[key] = text
            self.editor(project, current, values)
            return
        if step == "save":
            await self.save(project, current)
            return
        values, assignments = self.typed()
        if not assignments:
            self.editor(project, current, values, problem="The form sent no settings: open the editor again.")
            return
        await self.preview(project, current, values, assignments)

    async def preview(self, project: str, current: dict, values: dict, assignments: list[str],
                      warning: str | None = None) -> None:  # fmt: skip
        try:
            result = await self.call("change_policy", project, assignments, dry_run=True, about=project)
        except ApiError as error:
            if error.status != 400:
                raise
            self.set_status(400)
            self.editor(project, current, values, errors=field_errors(assignments), problem=error.message)
            return
        changed = differences(result)
        if not changed:
            self.editor(project, current, values, info="Nothing would change: every value is the one in effect.")
            return
        wanted = {a.partition("=")[0]: a for a in assignments}
        settings = describe()
        rows = [
            {"key": key, "help": settings[key]["help"], "before": shown(key, result["previous"][key]),
             "after": shown(key, result["policy"][key])}
            for key in changed
        ]  # fmt: skip
        self.render_template(
            "policy_preview.html", project_name=project, rows=rows, assignments=[wanted[key] for key in changed],
            based_on=digest(result["previous"]), warning=warning,
        )  # fmt: skip

    async def save(self, project: str, current: dict) -> None:
        assignments = self.get_body_arguments("set")
        if digest(current) != self.get_body_argument("based_on", ""):
            values = {key: form_value(value) for key, value in current.items()}
            warning = "The policy changed after your preview (another admin?): check the changes again, then save."
            await self.preview(project, current, values, assignments, warning=warning)
            return
        try:
            result = await self.call("change_policy", project, assignments, about=project)
        except ApiError as error:
            if error.status != 400:
                raise
            self.set_status(400)
            values = {key: form_value(value) for key, value in current.items()}
            self.editor(project, current, values, errors=field_errors(assignments), problem=error.message)
            return
        changes = "; ".join(
            f"{key} {shown(key, result['previous'][key])} -> {shown(key, result['policy'][key])}"
            for key in differences(result)
        )
        self.done(f"The policy of {project} is saved: {changes or 'nothing changed'}.", "admin", "projects",
                  project, "policy")  # fmt: skip


# --- the audit viewer ------------------------------------------------------------------------------------------


class AuditPage(Page):
    FILTERS = ("project", "user", "action", "outcome")

    async def get(self) -> None:
        await self.require_admin("the audit viewer")
        values = {name: self.get_query_argument(name, "").strip()[:100] for name in self.FILTERS}
        before_text = self.get_query_argument("before", "").strip()
        verify = await self.call("verify_audit")
        try:
            filters = self.filters(values)
            before = audit_position(before_text)
        except ApiError as error:
            self.set_status(400)
            self.show(values, verify, {"events": [], "next": None}, None, error.message)
            return
        page = await self.call("read_audit", **filters, before=before, limit=AUDIT_PAGE)
        self.show(values, verify, page, before, None)

    def show(self, values: dict, verify: dict, page: dict, before: int | None, problem: str | None) -> None:
        self.render_template(
            "admin_audit.html", values=values, verify=verify, events=page["events"], next=page["next"],
            before=before, problem=problem, outcomes=sorted(OUTCOMES), section="audit",
        )  # fmt: skip

    @staticmethod
    def filters(values: dict[str, str]) -> dict:
        filters: dict = {}
        if values["project"]:
            filters["project"] = common.project_name(values["project"])
        if values["user"]:
            filters["user"] = common.user_name(values["user"])
        if values["action"]:
            if not _ACTION.fullmatch(values["action"]):
                raise ApiError(400, f"action must be an event name such as member.add, got {values['action']!r}")
            filters["action"] = values["action"]
        if values["outcome"]:
            if values["outcome"] not in OUTCOMES:
                raise ApiError(400, f"outcome must be one of {', '.join(sorted(OUTCOMES))}")
            filters["outcome"] = values["outcome"]
        return filters
