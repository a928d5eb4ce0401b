"""The portal's web pages (server-rendered, ``templates/``), on top of the API's ``ProjectService`` calls.

Register a page by adding ``(path, handler)`` to ``routes()``: ``path`` relative to the service's prefix, in
OpenAPI's ``{name}`` form (``/projects/{project}``); handlers subclass ``common.Page`` (``base.PageHandler``).

Screens: ``mine.py`` (my projects, the start page), ``project.py`` (a project: members, datasets and shares,
sessions, its audit trail), ``admin.py`` (hub admins: all projects, creation, the policy editor, the audit
viewer). Every form posts to a path of its own, with the hub's XSRF token.
"""

from __future__ import annotations

from .admin import AdminPage, AuditPage, CreateProjectPage, PolicyPage
from .common import NotFoundPage
from .mine import MyProjectsPage
from .project import (
    AcceptPage,
    AddMemberPage,
    MemberRolePage,
    OfferPage,
    ProjectAuditPage,
    ProjectPage,
    RemoveMemberPage,
    RevokePage,
    StopSessionPage,
)

ROUTES: list[tuple[str, type]] = [
    ("/", MyProjectsPage),
    ("/projects/{project}", ProjectPage),
    ("/projects/{project}/members", AddMemberPage),
    ("/projects/{project}/members/{user}/role", MemberRolePage),
    ("/projects/{project}/members/{user}/remove", RemoveMemberPage),
    ("/projects/{project}/shares", OfferPage),
    ("/projects/{project}/shares/{dataset}/{target}/revoke", RevokePage),
    ("/projects/{project}/received/{owner}/{dataset}/accept", AcceptPage),
    ("/projects/{project}/sessions/{user}/stop", StopSessionPage),
    ("/projects/{project}/audit", ProjectAuditPage),
    ("/admin", AdminPage),
    ("/admin/projects", CreateProjectPage),
    ("/admin/projects/{project}/policy", PolicyPage),
    ("/admin/audit", AuditPage),
    # Anything else but the API's paths (which answer JSON): a 404 page, once the person is signed in.
    ("/(?!api/).*", NotFoundPage),
]


def routes() -> list[tuple[str, type]]:
    return list(ROUTES)
