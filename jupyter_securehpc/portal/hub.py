"""The hub's REST API as the portal uses it, with the service's own token: a project's sessions.

A session is the named server ``PROJECT`` of a member. The service's role (hubconfig.py) lets it list users
and their servers, read the servers' spawner state (for the Slurm job id and node: the portal keeps nothing
else of it) and stop servers; ``ProjectService`` decides who may see or stop which.
"""

from __future__ import annotations

import logging
from urllib.parse import quote

import requests

from ..projects.service import NotFound

log = logging.getLogger(__name__)

PAGINATED = "application/jupyterhub-pagination+json"


class HubError(RuntimeError):
    """The hub did not answer as expected; the message names the call and the status, never a token."""


class HubClient:
    def __init__(self, api_url: str, token: str, timeout: float = 10) -> None:
        self.api_url = api_url.rstrip("/")
        self._token = token
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"HubClient({self.api_url!r})"

    def _request(self, method: str, path: str, **kwargs: object) -> requests.Response:
        headers = {"Authorization": f"token {self._token}", **kwargs.pop("headers", {})}  # type: ignore[arg-type]
        try:
            return requests.request(method, self.api_url + path, headers=headers, timeout=self.timeout, **kwargs)
        except requests.RequestException as error:
            where = path.split("?")[0]
            raise HubError(f"the hub's API did not answer {method} {where}: {type(error).__name__}") from None

    def active_users(self) -> list[dict]:
        """Every user with a server that is starting, running or stopping (the hub pages the answer)."""
        users: list[dict] = []
        offset = 0
        while True:
            response = self._request(
                "GET", f"/users?state=active&offset={offset}&limit=200", headers={"Accept": PAGINATED}
            )
            if response.status_code != 200:
                raise HubError(f"the hub answered {response.status_code} to listing users with servers")
            data = response.json()
            items = data["items"] if isinstance(data, dict) else data
            users += items
            following = (data.get("_pagination") or {}).get("next") if isinstance(data, dict) else None
            if not following or not items:
                return users
            offset = following["offset"]

    def project_sessions(self, project: str, members: set[str]) -> list[dict]:
        """The servers named ``project`` of ``members`` (servers of anyone else are not the project's)."""
        return sessions_of(self.active_users(), {project: members})[project]

    def sessions_by_project(self, members: dict[str, set[str]]) -> dict[str, list[dict]]:
        """For each project, the servers named after it of its ``members``, from one listing of the hub's users."""
        return sessions_of(self.active_users(), members)

    def stop(self, user: str, project: str) -> dict:
        """Stop ``user``'s server ``project``; NotFound when it is not running."""
        response = self._request("GET", f"/users/{quote(user, safe='')}")
        server = (response.json().get("servers") or {}).get(project) if response.status_code == 200 else None
        if server is None:
            raise NotFound(f"{user} has no running session in {project}")
        model = session_model(user, project, server)
        response = self._request("DELETE", f"/users/{quote(user, safe='')}/servers/{quote(project, safe='')}")
        if response.status_code not in (202, 204):
            raise HubError(f"the hub answered {response.status_code} to stopping {user}'s server {project}")
        return {"job_id": model["job_id"], "pending": "stop" if response.status_code == 202 else None}


def sessions_of(users: list[dict], members: dict[str, set[str]]) -> dict[str, list[dict]]:
    """``{project: sessions}`` among ``users`` (the hub's user models): each project's servers, named after it,
    of its ``members`` only (a server of that name of anyone else is not the project's), by user name."""
    found: dict[str, list[dict]] = {project: [] for project in members}
    for user in users:
        for project, server in (user.get("servers") or {}).items():
            if project in members and user["name"] in members[project] and server is not None:
                found[project].append(session_model(user["name"], project, server))
    return {project: sorted(sessions, key=lambda s: s["user"]) for project, sessions in found.items()}


def _number(value: object) -> int | None:
    text = value[0] if isinstance(value, list) and value else value
    return int(text) if isinstance(text, int | str) and str(text).isdigit() else None


def session_model(user: str, project: str, server: dict) -> dict:
    """What the API shows of a server: who, where (Slurm job and node), what it asked for, since when."""
    state = server.get("state") or {}
    job_state, _, node = str(state.get("job_status") or "").partition(" ")
    options = server.get("user_options") or {}
    return {
        "user": user,
        "project": project,
        "ready": bool(server.get("ready")),
        "pending": server.get("pending"),
        "started": server.get("started"),
        "last_activity": server.get("last_activity"),
        "job_id": str(state["job_id"]) if state.get("job_id") else None,
        "job_state": job_state or None,
        "node": node.strip() or None,
        "gpus": _number(options.get("gpus")),
        "cpus": _number(options.get("cpus")),
        "memory_gb": _number(options.get("memory_gb")),
    }
