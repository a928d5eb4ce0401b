"""``/projects/{project}/datasets``: a project's datasets (size, files, import time, manifest digest) and the
datasets shared into it. Imports stay on the command line: they read a folder on the hub host."""

from __future__ import annotations

from ..base import APIHandler
from . import common


class DatasetsHandler(APIHandler):
    async def get(self, project: str) -> None:
        project = common.project_name(project)
        self.reply(await self.call("list_datasets", project, about=project))
