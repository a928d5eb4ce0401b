"""My projects (``<prefix>``): every project the person is a member of, with their role, the policy's limits,
the datasets, who is working in it now, and a Start button that opens the hub's spawn page of the server named
after the project."""

from __future__ import annotations

import asyncio
import threading

from ..errors import ApiError
from ..hub import HubClient, session_model
from .common import Page


class ActiveServers:
    """The hub's users with servers, asked once per page (in a worker thread) for all the page's projects."""

    def __init__(self, hub: HubClient) -> None:
        self._hub = hub
        self._lock = threading.Lock()
        self._users: list[dict] | None = None

    def sessions(self, project: str, members: set[str]) -> list[dict]:
        with self._lock:
            if self._users is None:
                self._users = self._hub.active_users()
        found = []
        for user in self._users:
            server = (user.get("servers") or {}).get(project)
            if user["name"] in members and server is not None:
                found.append(session_model(user["name"], project, server))
        return sorted(found, key=lambda s: s["user"])


async def project_sessions(page: Page, project: str, servers: ActiveServers) -> tuple[list[dict], str | None]:
    """The project's running sessions, or none and why not (the hub not answering is no reason to fail the
    page: the rest of it comes from the projects database)."""
    try:
        sessions = await page.call(
            "list_sessions", project, lambda members: servers.sessions(project, members), about=project
        )
    except ApiError as error:
        if error.status != 503:
            raise
        return [], error.message
    return sessions, None


class MyProjectsPage(Page):
    async def get(self) -> None:
        assert self.caller is not None
        listed = await self.call("list_projects")
        mine = [entry for entry in listed if entry["role"]]
        servers = ActiveServers(self.settings["hub"])

        async def card(entry: dict) -> dict:
            name = entry["name"]
            info = await self.call("show_project", name, about=name)
            sessions, sessions_problem = await project_sessions(self, name, servers)
            running = next((s for s in sessions if s["user"] == self.caller.name), None)
            return {
                "name": name,
                "role": entry["role"],
                "policy": info["policy"],
                "datasets": info["datasets"],
                "shared_in": info["shared_in"],
                "members": len(info["members"]),
                "sessions": sessions,
                "sessions_problem": sessions_problem,
                "mine_running": running,
                "spawn_url": self.spawn_url(name),
                "server_url": self.server_url(self.caller.name, name),
            }

        cards = await asyncio.gather(*(card(entry) for entry in mine))
        self.render_template("mine.html", projects=cards, all_projects=len(listed), section="mine")
