"""My projects (``<prefix>``): every project the person is a member of, with their role, the policy's limits,
the datasets, who is working in it now, and a Start button that opens the hub's spawn page of the server named
after the project."""

from __future__ import annotations

from ..errors import ApiError, from_exception
from ..hub import HubClient, HubError
from .common import Page


async def project_sessions(page: Page, project: str) -> tuple[list[dict], str | None]:
    """One project's running sessions (the project page), or none and why not (the hub not answering is no
    reason to fail the page: the rest of it comes from the projects database)."""
    hub: HubClient = page.settings["hub"]
    try:
        sessions = await page.call(
            "list_sessions", project, lambda members: hub.project_sessions(project, members), about=project
        )
    except ApiError as error:
        if error.status != 503:
            raise
        return [], error.message
    return sessions, None


class MyProjectsPage(Page):
    async def get(self) -> None:
        assert self.caller is not None
        hub: HubClient = self.settings["hub"]
        problems: list[str] = []

        def running(members: dict[str, set[str]]) -> dict[str, list[dict]]:
            """The hub's one answer for all the page's projects; the hub not answering is no reason to fail
            the page (the rest of it comes from the projects database): the cards say why sessions are missing."""
            try:
                return hub.sessions_by_project(members)
            except HubError as error:
                answer = from_exception(error, project=None)
                problems.append(answer.message if answer is not None else str(error))
                return {}

        # One ProjectService call (one database session, one audit event) for every card.
        overview = await self.call("my_projects", running)
        problem = problems[0] if problems else None
        cards = []
        for project in overview["projects"]:
            name, sessions = project["name"], project["sessions"]
            cards.append(
                {
                    "name": name,
                    "role": project["role"],
                    "policy": project["policy"],
                    "datasets": project["datasets"],
                    "shared_in": project["shared_in"],
                    "members": len(project["members"]),
                    "sessions": sessions,
                    "sessions_problem": problem,
                    "mine_running": next((s for s in sessions if s["user"] == self.caller.name), None),
                    "spawn_url": self.spawn_url(name),
                    "server_url": self.server_url(self.caller.name, name),
                }
            )
        self.render_template("mine.html", projects=cards, all_projects=overview["total"], section="mine")
