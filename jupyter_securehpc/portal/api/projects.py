"""``/projects``: the projects you may see (all of them for hub admins), one project, project creation."""

from __future__ import annotations

from ..base import APIHandler
from . import common


class ProjectsHandler(APIHandler):
    async def get(self) -> None:
        self.reply({"projects": await self.call("list_projects")})

    async def post(self) -> None:
        body = common.fields(self.read_json(), ("name", "owner"))
        name, owner = common.project_name(body["name"], "name"), common.user_name(body["owner"], "owner")
        self.reply(await self.call("create_project", name, owner), status=201)


class ProjectHandler(APIHandler):
    async def get(self, project: str) -> None:
        project = common.project_name(project)
        self.reply(await self.call("show_project", project, about=project))
