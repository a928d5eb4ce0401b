"""``/projects/{project}/members``: who is in a project with which role; data owners add, change, remove."""

from __future__ import annotations

from ..base import APIHandler
from . import common


class MembersHandler(APIHandler):
    async def get(self, project: str) -> None:
        project = common.project_name(project)
        info = await self.call("show_project", project, about=project)
        self.reply({"project": project, "members": info["members"]})


class MemberHandler(APIHandler):
    async def put(self, project: str, user: str) -> None:
        """Add ``user`` with the body's role, or change their role (201 when added, 200 when changed)."""
        project, user = common.project_name(project), common.user_name(user)
        role = common.role(common.fields(self.read_json(), ("role",))["role"])
        result = await self.call("add_member", project, user, role, about=project)
        self.reply(result, status=201 if result["previous_role"] is None else 200)

    async def delete(self, project: str, user: str) -> None:
        project, user = common.project_name(project), common.user_name(user)
        self.reply(await self.call("remove_member", project, user, about=project))
