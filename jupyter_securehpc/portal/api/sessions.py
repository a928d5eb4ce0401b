"""``/projects/{project}/sessions``: the project's running servers (members see them); a data owner or hub
admin stops one (DELETE ``sessions/{user}``). Read from the hub's REST API with the service's token."""

from __future__ import annotations

from ..base import APIHandler
from . import common


class SessionsHandler(APIHandler):
    async def get(self, project: str) -> None:
        project = common.project_name(project)
        hub = self.settings["hub"]
        sessions = await self.call("list_sessions", project, lambda members: hub.project_sessions(project, members),
                                   about=project)  # fmt: skip
        self.reply({"project": project, "sessions": sessions})


class SessionHandler(APIHandler):
    async def delete(self, project: str, user: str) -> None:
        project, user = common.project_name(project), common.user_name(user)
        hub = self.settings["hub"]
        result = await self.call("stop_session", project, user, lambda: hub.stop(user, project), about=project)
        self.reply(result, status=202)
