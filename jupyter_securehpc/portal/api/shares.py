"""``/projects/{project}/shares``: datasets offered read-only to other projects and received from them.

The project's data owner offers (POST) and revokes (DELETE ``shares/{dataset}/{target}``); a data owner of the
receiving project accepts (POST ``received/{owner}/{dataset}/accept``). Sharing copies nothing.
"""

from __future__ import annotations

from ...projects.service import SHARE_STATES, NotFound
from ..base import APIHandler
from ..errors import ApiError
from . import common


class SharesHandler(APIHandler):
    async def get(self, project: str) -> None:
        project = common.project_name(project)
        state = common.query(self, ("state",)).get("state")
        if state is not None and state not in SHARE_STATES:
            raise ApiError(400, f"state must be one of {', '.join(SHARE_STATES)}, got {state!r}")
        self.reply(await self.call("list_shares", project, state, about=project))

    async def post(self, project: str) -> None:
        project = common.project_name(project)
        body = common.fields(self.read_json(), ("dataset", "with"))
        dataset, target = common.dataset_name(body["dataset"]), common.project_name(body["with"], "with")
        if target == project:
            raise ApiError(400, f"{project}/{dataset} belongs to {project} already: share it with another project")
        self.reply(await self.call("share_dataset", f"{project}/{dataset}", target, about=project), status=201)


class ShareHandler(APIHandler):
    async def delete(self, project: str, dataset: str, target: str) -> None:
        project, dataset, target = (
            common.project_name(project),
            common.dataset_name(dataset),
            common.project_name(target),
        )
        self.reply(await self.call("revoke_share", f"{project}/{dataset}", target, about=project))


class AcceptHandler(APIHandler):
    async def post(self, project: str, owner: str, dataset: str) -> None:
        project, owner = common.project_name(project), common.project_name(owner, "owner")
        dataset = common.dataset_name(dataset)
        ref = f"{owner}/{dataset}"
        try:
            self.reply(await self.call("accept_share", project, ref, about=project))
        except ApiError as error:
            # Whether the offering project or its dataset exists is not the receiving project's business.
            if error.status == 404 and not error.message.startswith(f"project {project!r}"):
                raise ApiError(404, f"there is no pending offer of {ref} to {project}") from None
            raise


__all__ = ["AcceptHandler", "NotFound", "ShareHandler", "SharesHandler"]
