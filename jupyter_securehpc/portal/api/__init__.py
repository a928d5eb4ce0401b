"""The API's routes: path (relative to ``<prefix>api/v1``, OpenAPI's ``{name}`` form) -> handler.

``openapi.py`` describes every path and method here; ``tests/portal/test_portal_openapi.py`` checks that the
two agree (every route and method in the document, every documented one served).
"""

from __future__ import annotations

from .audit import AuditHandler, AuditVerifyHandler
from .datasets import DatasetsHandler
from .me import MeHandler
from .members import MemberHandler, MembersHandler
from .openapi_handler import OpenAPIHandler
from .policies import PolicyHandler, PolicyPreviewHandler, PolicySettingsHandler
from .projects import ProjectHandler, ProjectsHandler
from .runs import RunHandler, RunsHandler
from .sessions import SessionHandler, SessionsHandler
from .shares import AcceptHandler, ShareHandler, SharesHandler

ROUTES: list[tuple[str, type]] = [
    ("/openapi.json", OpenAPIHandler),
    ("/me", MeHandler),
    ("/policy-settings", PolicySettingsHandler),
    ("/projects", ProjectsHandler),
    ("/projects/{project}", ProjectHandler),
    ("/projects/{project}/members", MembersHandler),
    ("/projects/{project}/members/{user}", MemberHandler),
    ("/projects/{project}/datasets", DatasetsHandler),
    ("/projects/{project}/shares", SharesHandler),
    ("/projects/{project}/shares/{dataset}/{target}", ShareHandler),
    ("/projects/{project}/received/{owner}/{dataset}/accept", AcceptHandler),
    ("/projects/{project}/policy", PolicyHandler),
    ("/projects/{project}/policy/preview", PolicyPreviewHandler),
    ("/projects/{project}/sessions", SessionsHandler),
    ("/projects/{project}/sessions/{user}", SessionHandler),
    ("/projects/{project}/runs", RunsHandler),
    ("/projects/{project}/runs/{run}", RunHandler),
    ("/audit", AuditHandler),
    ("/audit/verify", AuditVerifyHandler),
]
