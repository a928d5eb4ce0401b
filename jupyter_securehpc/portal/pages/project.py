"""A project's page (``<prefix>projects/NAME``): members see it; its data owners (and hub admins) manage it.

Members and roles (add, change a role, remove), datasets and shares (offer, accept, revoke), the running
sessions (stop) and the project's audit trail. Every change is a form with the hub's XSRF token; the ones
that are hard to undo (removing a member, offering, accepting or revoking a share, stopping a session) show a
confirmation page first. Bad input shows the project page again with the reason beside the form and what was
typed still in it.
"""

from __future__ import annotations

from ...projects.authz import Action
from ..api import common
from ..api.runs import shown as shown_run
from ..errors import ApiError
from .common import ROLE_NAMES, Page
from .mine import project_sessions

AUDIT_PAGE = 50
# The project page lists its newest headless runs (the API and `securehpc run list` page through all).
RUNS_SHOWN = 20


class ProjectBase(Page):
    async def project_context(self, project: str) -> dict:
        """Everything the project page shows; 404 for a project the person is not in (as for none)."""
        assert self.caller is not None
        info = await self.call("show_project", project, about=project)
        datasets = await self.call("list_datasets", project, about=project)
        shares = await self.call("list_shares", project, about=project)
        sessions, sessions_problem = await project_sessions(self, project)
        runs = await self.call("list_runs", project, RUNS_SHOWN, about=project)
        role = next((m["role"] for m in info["members"] if m["user"] == self.caller.name), None)
        policy = info["policy"]
        may = {
            "manage_members": self.may(Action.MEMBER_ADD, role, policy),
            "share": self.may(Action.DATASET_SHARE, role, policy),
            "accept": self.may(Action.DATASET_ACCEPT, role, policy),
            "revoke": self.may(Action.DATASET_REVOKE, role, policy),
            "stop": self.may(Action.SESSION_STOP, role, policy),
            "audit": self.may(Action.PROJECT_AUDIT_READ, role, policy),
            "start": self.may(Action.SESSION_START, role, policy),
            "policy": self.caller.is_admin,
        }
        return {
            "project": info,
            "role": role,
            "datasets": datasets["datasets"],
            "shared_in": datasets["shared_in"],
            "offered": shares["offered"],
            "received": shares["received"],
            "sessions": sessions,
            "sessions_problem": sessions_problem,
            # What a run is, never what it produced; parameter names without values (as the API's runs).
            "runs": [shown_run(record) for record in runs],
            "may": may,
            "spawn_url": self.spawn_url(project),
            "server_url": self.server_url(self.caller.name, project),
            "errors": {},
            "values": {},
        }

    async def show(self, project: str, *, errors: dict | None = None, values: dict | None = None) -> None:
        context = await self.project_context(project)
        context["errors"], context["values"] = errors or {}, values or {}
        self.render_template("project.html", **context)

    async def form_failed(self, project: str, error: ApiError, form: str, values: dict) -> None:
        """Bad input or a clash (400, 409): the project page again, the reason beside ``form``, values kept.
        Anything else (refused, not found, unavailable) is an error page."""
        if error.status not in (400, 409):
            raise error
        self.set_status(error.status)
        await self.show(project, errors={form: error.message}, values={form: values})

    async def may_confirm(self, project: str, action: Action) -> None:
        """Before a confirmation page: 404 for a project the person is not in, 403 (recorded, as ProjectService
        records its refusals) when they may not take ``action`` in it; the action itself decides again."""
        assert self.caller is not None
        info = await self.call("show_project", project, about=project)
        role = next((m["role"] for m in info["members"] if m["user"] == self.caller.name), None)
        decision = self.decision(action, role, info["policy"])
        if not decision:
            await self.call("record_refusal", action.value, f"project:{project}", decision.reason, project)
            raise ApiError(403, f"{self.caller.name} may not {action.value} in {project}: {decision.reason}")

    def confirm(self, *, title: str, text: str, details: list[str], button: str, fields: dict, back: str,
                danger: bool = True) -> None:  # fmt: skip
        """The confirmation page: the same form again with ``confirmed=yes``, or back to the project."""
        self.render_template(
            "confirm.html", title=title, text=text, details=details, button=button, action=self.request.path,
            fields=fields, back=back, danger=danger,
        )  # fmt: skip


class ProjectPage(ProjectBase):
    async def get(self, project: str) -> None:
        await self.show(self.project_arg(project))


class AddMemberPage(ProjectBase):
    async def post(self, project: str) -> None:
        project = self.project_arg(project)
        user, role = self.field("user"), self.field("role")
        try:
            user = common.user_name(user)
            result = await self.call("add_member", project, user, role, about=project)
        except ApiError as error:
            await self.form_failed(project, error, "add_member", {"user": user, "role": role})
            return
        if result["previous_role"] is None:
            text = f"{user} is now a member of {project} as {ROLE_NAMES[result['role']]}."
        else:
            text = f"{user} was already a member: their role is now {ROLE_NAMES[result['role']]}."
        self.done(text, "projects", project)


class MemberRolePage(ProjectBase):
    async def post(self, project: str, user: str) -> None:
        project, user = self.project_arg(project), common.user_name(user)
        role = self.field("role")
        try:
            result = await self.call("add_member", project, user, role, about=project)
        except ApiError as error:
            await self.form_failed(project, error, f"role:{user}", {"role": role})
            return
        before = ROLE_NAMES.get(result["previous_role"] or "", "not a member")
        self.done(f"{user}'s role in {project}: {before} -> {ROLE_NAMES[result['role']]}.", "projects", project)


class RemoveMemberPage(ProjectBase):
    async def post(self, project: str, user: str) -> None:
        project, user = self.project_arg(project), common.user_name(user)
        if not self.confirmed():
            await self.may_confirm(project, Action.MEMBER_REMOVE)
            self.confirm(
                title=f"Remove {user} from {project}?",
                text=f"{user} loses access to {project} at once: they can no longer start sessions in it, and "
                "their Unix account for the project is locked (its files keep their owner).",
                details=["A running session of theirs goes on until it is stopped (see Sessions)."],
                button=f"Remove {user}", fields={}, back=self.page_url("projects", project),
            )  # fmt: skip
            return
        try:
            result = await self.call("remove_member", project, user, about=project)
        except ApiError as error:
            await self.form_failed(project, error, f"role:{user}", {})
            return
        self.done(f"{user} ({ROLE_NAMES[result['removed_role']]}) was removed from {project}.", "projects", project)


class OfferPage(ProjectBase):
    async def post(self, project: str) -> None:
        project = self.project_arg(project)
        dataset, target = self.field("dataset"), self.field("with")
        values = {"dataset": dataset, "with": target}
        try:
            dataset, target = common.dataset_name(dataset), common.project_name(target, "project to share with")
            if target == project:
                raise ApiError(400, f"{project}/{dataset} belongs to {project} already: name another project")
            if not self.confirmed():
                await self.may_confirm(project, Action.DATASET_SHARE)
                self.confirm(
                    title=f"Offer {project}/{dataset} to {target}?",
                    text=f"The data owners of {target} may then accept it: from then on, sessions in {target} "
                    f"mount {project}/{dataset} read-only. Nothing is copied, and you can revoke the share later.",
                    details=[f"Dataset: {project}/{dataset}", f"Offered to project: {target}"],
                    button="Offer the dataset", fields=values, back=self.page_url("projects", project),
                    danger=False,
                )  # fmt: skip
                return
            await self.call("share_dataset", f"{project}/{dataset}", target, about=project)
        except ApiError as error:
            await self.form_failed(project, error, "offer", values)
            return
        self.done(f"{project}/{dataset} is offered to {target}; its data owners must accept it.", "projects", project)


class RevokePage(ProjectBase):
    async def post(self, project: str, dataset: str, target: str) -> None:
        project, dataset = self.project_arg(project), common.dataset_name(dataset)
        target = common.project_name(target, "project")
        ref = f"{project}/{dataset}"
        if not self.confirmed():
            await self.may_confirm(project, Action.DATASET_REVOKE)
            self.confirm(
                title=f"Revoke the share of {ref} with {target}?",
                text=f"Sessions in {target} that start from now on no longer get {ref}. Sessions running now keep "
                "it until they stop: stop them too if the data must be out of reach at once.",
                details=[f"Dataset: {ref}", f"Shared with: {target}"],
                button="Revoke the share", fields={}, back=self.page_url("projects", project),
            )  # fmt: skip
            return
        try:
            await self.call("revoke_share", ref, target, about=project)
        except ApiError as error:
            await self.form_failed(project, error, "shares", {})
            return
        self.done(f"The share of {ref} with {target} is revoked.", "projects", project)


class AcceptPage(ProjectBase):
    async def post(self, project: str, owner: str, dataset: str) -> None:
        project = self.project_arg(project)
        owner, dataset = common.project_name(owner, "owner"), common.dataset_name(dataset)
        ref = f"{owner}/{dataset}"
        if not self.confirmed():
            await self.may_confirm(project, Action.DATASET_ACCEPT)
            self.confirm(
                title=f"Accept {ref} into {project}?",
                text=f"Sessions of {project}'s members that start from now on mount {ref} read-only (under "
                f"datasets/). Nothing is copied; the data owners of {owner} may revoke the share.",
                details=[f"Dataset: {ref}", f"Into project: {project}"],
                button="Accept the dataset", fields={}, back=self.page_url("projects", project), danger=False,
            )  # fmt: skip
            return
        try:
            await self.call("accept_share", project, ref, about=project)
        except ApiError as error:
            if error.status == 404 and not error.message.startswith(f"project {project!r}"):
                # Whether the offering project or its dataset exists is not the receiving project's business.
                error = ApiError(409, f"there is no pending offer of {ref} to {project}")
            await self.form_failed(project, error, "received", {})
            return
        self.done(f"{ref} is accepted into {project}: new sessions mount it read-only.", "projects", project)


class StopSessionPage(ProjectBase):
    async def post(self, project: str, user: str) -> None:
        project, user = self.project_arg(project), common.user_name(user)
        if not self.confirmed():
            await self.may_confirm(project, Action.SESSION_STOP)
            self.confirm(
                title=f"Stop {user}'s session in {project}?",
                text=f"The Slurm job ends and {user}'s JupyterLab closes; what was not saved in the workspace is "
                "lost. They can start a new session later.",
                details=[f"User: {user}", f"Project: {project}"],
                button="Stop the session", fields={}, back=self.page_url("projects", project),
            )  # fmt: skip
            return
        hub = self.settings["hub"]
        try:
            await self.call("stop_session", project, user, lambda: hub.stop(user, project), about=project)
        except ApiError as error:
            await self.form_failed(project, error, "sessions", {})
            return
        self.done(f"{user}'s session in {project} is stopping.", "projects", project)


class ProjectAuditPage(Page):
    async def get(self, project: str) -> None:
        project = self.project_arg(project)
        before = audit_position(self.get_query_argument("before", ""))
        page = await self.call("read_audit", project=project, before=before, limit=AUDIT_PAGE, about=project)
        self.render_template(
            "project_audit.html", project=project, events=page["events"], next=page["next"], before=before
        )


def audit_position(text: str) -> int | None:
    """The ``before`` of an audit page (the ``seq`` to continue below), or 400 saying what it must be."""
    if text == "":
        return None
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 2**53:
        raise ApiError(400, f"before must be an event number (a whole number from 1), got {text[:40]!r}")
    return int(text)
