"""``/projects/{project}/policy``: members read it; hub admins change it (PATCH) or preview a change (POST
``policy/preview``, nothing written). ``/policy-settings``: every setting with its range, default and help."""

from __future__ import annotations

from ...projects.policy import InvalidPolicy, Policy, assignments_from_json, describe
from ..base import APIHandler
from ..errors import ApiError
from . import common


def _assignments(handler: APIHandler) -> list[str]:
    """The body as ``KEY=VALUE`` assignments, each value checked by policy.py's own parsers (400 otherwise)."""
    try:
        assignments = assignments_from_json(handler.read_json())
        Policy().with_settings(assignments)  # the values alone, before anyone's rights are asked
    except InvalidPolicy as error:
        raise ApiError(400, str(error)) from None
    return assignments


class PolicyHandler(APIHandler):
    async def get(self, project: str) -> None:
        project = common.project_name(project)
        self.reply({"project": project, "policy": await self.call("show_policy", project, about=project)})

    async def patch(self, project: str) -> None:
        project = common.project_name(project)
        assignments = _assignments(self)
        result = await self.call("change_policy", project, assignments, about=project)
        self.reply({"project": project, **result})


class PolicyPreviewHandler(APIHandler):
    async def post(self, project: str) -> None:
        project = common.project_name(project)
        assignments = _assignments(self)
        result = await self.call("change_policy", project, assignments, dry_run=True, about=project)
        self.reply({"project": project, **result})


class PolicySettingsHandler(APIHandler):
    async def get(self) -> None:
        self.reply({"settings": describe()})
