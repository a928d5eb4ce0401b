"""The API's OpenAPI 3 document, built from this one description (served at ``api/v1/openapi.json``).

Paths and methods here must be exactly those of ``api/__init__.py`` (a test checks both ways); schemas say what
each answer holds, and the schema fuzz test (schemathesis) checks the served answers against them.
"""

from __future__ import annotations

from ..audit import OUTCOMES
from ..projects.policy import PARSERS, describe
from ..projects.roles import Role
from ..projects.runs import ACTIVE as RUN_ACTIVE
from ..projects.runs import ENDED as RUN_ENDED
from ..projects.service import MAX_AUDIT_PAGE, SHARE_STATES
from ..vocabulary import MAX_LENGTH
from . import ACCESS_SCOPE, ADMIN_SCOPE
from .errors import CODES

ROLES = [role.value for role in Role]
NAME = {"type": "string", "minLength": 1, "maxLength": MAX_LENGTH}
USER = {"type": "string", "minLength": 1, "maxLength": 255}
TIME = {"type": "string", "format": "date-time"}
NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
ROLE = {"type": "string", "enum": ROLES}
RUN_ID = {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,39}$"}
# A principal's or project group's Unix name (principals/names.py).
ACCOUNT = {"type": "string", "pattern": "^[a-z][a-z0-9_-]{0,31}$"}


def _object(properties: dict, required: list[str] | None = None, *, extra: bool = True) -> dict:
    """An object schema; answers may gain fields in later versions (``extra``), request bodies may not."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        "additionalProperties": extra,
    }


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _setting_schema(info: dict) -> dict:
    kind = info["kind"]
    if kind == "boolean":
        return {"type": "boolean"}
    if kind == "roles":
        return {"type": "array", "items": ROLE, "uniqueItems": True}
    if kind == "partition":
        return {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}
    number = {"type": "integer", "minimum": info["minimum"], "maximum": info["maximum"]}
    if kind == "minutes":
        return {"oneOf": [number, {"type": "string", "pattern": "^[0-9]{1,5}[mhd]$"}]}
    return number


def schemas() -> dict:
    settings = describe()
    policy_values = {key: _setting_schema(info) for key, info in settings.items()}
    for key, info in settings.items():
        policy_values[key] = {**policy_values[key], "description": info["help"]}
    stored = {key: ({"type": "integer"} if "oneOf" in value else value) for key, value in policy_values.items()}
    share = _object(
        {
            "dataset": {"type": "string"},
            "with": NAME,
            "state": {"type": "string", "enum": list(SHARE_STATES)},
            "offered_by": USER,
            "offered_at": TIME,
            "decided_by": {"type": ["string", "null"]},
            "decided_at": NULLABLE_TIME,
        }
    )
    return {
        "Error": _object(
            {
                "error": {"type": "string", "enum": sorted({*CODES.values(), "xsrf", "not_authenticated"})},
                "message": {"type": "string", "minLength": 1},
            }
        ),
        "Me": _object({"name": USER, "admin": {"type": "boolean"}}),
        "Policy": {"type": "object", "properties": stored, "required": list(PARSERS), "additionalProperties": True},
        "PolicyChange": {
            "type": "object",
            "description": "Settings to change (the others keep their value); see GET /policy-settings.",
            "properties": policy_values,
            "minProperties": 1,
            "additionalProperties": False,
        },
        "PolicyResult": _object(
            {
                "project": NAME,
                "policy": _ref("Policy"),
                "previous": _ref("Policy"),
                "changed": {"type": "array", "items": {"type": "string"}},
            }
        ),
        "PolicySettings": _object(
            {
                "settings": {
                    "type": "object",
                    "additionalProperties": _object(
                        {
                            "kind": {"type": "string"},
                            "default": {},
                            "help": {"type": "string"},
                            "minimum": {"type": "integer"},
                            "maximum": {"type": "integer"},
                        },
                        ["kind", "default", "help"],
                    ),
                }
            }
        ),
        "ProjectList": _object(
            {"projects": {"type": "array", "items": _object({"name": NAME, "role": {"type": ["string", "null"]}})}}
        ),
        "NewProject": _object({"name": NAME, "owner": USER}, extra=False),
        # ``principal``: the Unix account the member's sessions run as; ``group``: the project's group.
        "CreatedProject": _object({"project": NAME, "owner": USER, "principal": ACCOUNT, "group": ACCOUNT}),
        "Project": _object(
            {
                "name": NAME,
                "created_at": TIME,
                "created_by": USER,
                "members": {"type": "array", "items": _ref("Member")},
                "datasets": {"type": "array", "items": NAME},
                "shared_out": {
                    "type": "array",
                    "items": _object({"dataset": NAME, "with": NAME, "state": {"type": "string"}}),
                },
                "shared_in": {"type": "array", "items": {"type": "string"}},
                "policy": _ref("Policy"),
            }
        ),
        "Member": _object({"user": USER, "role": ROLE}),
        "Members": _object({"project": NAME, "members": {"type": "array", "items": _ref("Member")}}),
        "RoleChange": _object({"role": ROLE}, extra=False),
        "MemberChanged": _object(
            {
                "project": NAME,
                "user": USER,
                "role": ROLE,
                "previous_role": {"type": ["string", "null"]},
                "principal": ACCOUNT,
            }
        ),
        "MemberRemoved": _object(
            {
                "project": NAME,
                "user": USER,
                "removed_role": ROLE,
                "locked_principal": {"type": ["string", "null"], "maxLength": 32},
            }
        ),
        "Datasets": _object(
            {
                "project": NAME,
                "datasets": {
                    "type": "array",
                    "items": _object(
                        {
                            "dataset": NAME,
                            "files": {"type": "integer", "minimum": 0},
                            "bytes": {"type": "integer", "minimum": 0},
                            "manifest_sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                            "imported_at": TIME,
                            "imported_by": USER,
                        }
                    ),
                },
                "shared_in": {
                    "type": "array",
                    "items": _object({"dataset": {"type": "string"}, "state": {"type": "string"}}),
                },
            }
        ),
        "Share": share,
        "Shares": _object(
            {
                "project": NAME,
                "offered": {"type": "array", "items": _ref("Share")},
                "received": {"type": "array", "items": _ref("Share")},
            }
        ),
        "Offer": _object({"dataset": NAME, "with": NAME}, extra=False),
        "ShareState": _object(
            {"dataset": {"type": "string"}, "with": NAME, "state": {"type": "string"}, "previous": {"type": "string"}},
            ["dataset", "with", "state"],
        ),
        "Session": _object(
            {
                "user": USER,
                "project": NAME,
                "ready": {"type": "boolean"},
                "pending": {"type": ["string", "null"]},
                "started": NULLABLE_TIME,
                "last_activity": NULLABLE_TIME,
                "job_id": {"type": ["string", "null"]},
                "job_state": {"type": ["string", "null"]},
                "node": {"type": ["string", "null"]},
                "gpus": {"type": ["integer", "null"]},
                "cpus": {"type": ["integer", "null"]},
                "memory_gb": {"type": ["integer", "null"]},
            }
        ),
        "Sessions": _object({"project": NAME, "sessions": {"type": "array", "items": _ref("Session")}}),
        # A headless run as the hub last recorded it: never its outputs, nor its parameters' values.
        "Run": _object(
            {
                "run_id": RUN_ID,
                "project": NAME,
                "user": {**USER, "description": "who submitted it"},
                "notebook": {"type": "string", "description": "in the workspace (uploads: runs/RUN_ID/input/)"},
                "parameter_names": {"type": "array", "items": {"type": "string"}},
                "kernel": {"type": ["string", "null"]},
                "resources": {"type": "object"},
                "state": {"type": "string", "enum": [*RUN_ACTIVE, *RUN_ENDED]},
                "job_id": {"type": ["string", "null"]},
                "cells_done": {"type": ["integer", "null"], "minimum": 0},
                "cells_total": {"type": ["integer", "null"], "minimum": 0},
                "reason": {"type": ["string", "null"], "description": "how it ended, in one line"},
                "failed_cell": {"type": ["integer", "null"], "description": "the failing cell's index"},
                "exception": {"type": ["string", "null"], "description": "the exception's class name only"},
                "output": {"type": "string", "description": "its folder in the workspace (encrypted)"},
                "executed_notebook": {"type": ["string", "null"]},
                "log": {"type": "string"},
                "created_at": NULLABLE_TIME,
                "submitted_at": NULLABLE_TIME,
                "started_at": NULLABLE_TIME,
                "ended_at": NULLABLE_TIME,
                "ended_by": {"type": ["string", "null"]},
            }
        ),
        "Runs": _object({"project": NAME, "runs": {"type": "array", "items": _ref("Run")}}),
        "Stopped": _object(
            {
                "project": NAME,
                "user": USER,
                "job_id": {"type": ["string", "null"]},
                "pending": {"type": ["string", "null"]},
            }
        ),
        "Event": _object(
            {
                "seq": {"type": "integer", "minimum": 1},
                "time": {"type": "string"},
                "actor": {"type": "string"},
                "on_behalf_of": {"type": ["string", "null"]},
                "action": {"type": "string"},
                "object": {"type": "string"},
                "project": {"type": ["string", "null"]},
                "outcome": {"type": "string", "enum": sorted(OUTCOMES)},
                "reason": {"type": ["string", "null"]},
                "details": {"type": "object"},
                "prev": {"type": "string"},
                "hash": {"type": "string"},
            }
        ),
        "AuditPage": _object(
            {
                "events": {"type": "array", "items": _ref("Event")},
                "next": {
                    "type": ["integer", "null"],
                    "description": "pass as `before` for the next (older) page; null: no more",
                },
            }
        ),
        "AuditVerify": _object(
            {
                "ok": {"type": "boolean"},
                "events": {"type": "integer", "minimum": 0},
                "first_bad_line": {"type": ["integer", "null"]},
                "problem": {"type": ["string", "null"]},
                "head": {
                    "oneOf": [
                        {"type": "null"},
                        _object({"seq": {"type": "integer"}, "hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}),
                    ]
                },
            }
        ),
    }


def _param(name: str, where: str = "path", schema: dict | None = None, description: str = "") -> dict:
    default = USER if name == "user" else NAME
    param = {"name": name, "in": where, "required": where == "path", "schema": schema or default}
    if description:
        param["description"] = description
    return param


def _operation(
    summary: str,
    ok: int,
    schema: str,
    *,
    body: str | None = None,
    params: list[dict] | None = None,
    public: bool = False,
    also: tuple[int, ...] = (),
) -> dict:
    """An operation answering ``ok`` (and the success codes ``also``) with ``schema``, and the API's errors."""
    errors = (
        {} if public else {str(code): {"$ref": f"#/components/responses/{code}"} for code in (400, 403, 404, 409, 503)}
    )
    operation: dict = {
        "summary": summary,
        "responses": {
            **{
                str(code): {"description": "OK", "content": {"application/json": {"schema": _ref(schema)}}}
                for code in (ok, *also)
            },
            **errors,
        },
    }
    if params:
        operation["parameters"] = params
    if body:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
    if public:
        operation["security"] = []
    return operation


def paths() -> dict:
    project = [_param("project")]
    member = [*project, _param("user")]
    return {
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "security": [],
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
        "/me": {"get": _operation("Who you are to the portal (name, hub admin or not)", 200, "Me")},
        "/policy-settings": {
            "get": _operation("Every policy setting: kind, range, default, help", 200, "PolicySettings")
        },
        "/projects": {
            "get": _operation("Your projects and your role in each (hub admins: every project)", 200, "ProjectList"),
            "post": _operation(
                "Create a project with its first data owner (hub admins)", 201, "CreatedProject", body="NewProject"
            ),
        },
        "/projects/{project}": {
            "get": _operation("Members, datasets, shares and policy of a project", 200, "Project", params=project)
        },
        "/projects/{project}/members": {
            "get": _operation("The project's members and roles", 200, "Members", params=project)
        },
        "/projects/{project}/members/{user}": {
            "put": _operation(
                "Add a member (201) or change a member's role (200) (data owners, hub admins)",
                200,
                "MemberChanged",
                also=(201,),
                body="RoleChange",
                params=member,
            ),
            "delete": _operation("Remove a member (data owners, hub admins)", 200, "MemberRemoved", params=member),
        },
        "/projects/{project}/datasets": {
            "get": _operation(
                "Datasets (size, files, import time, manifest digest) and those shared in",
                200,
                "Datasets",
                params=project,
            )
        },
        "/projects/{project}/shares": {
            "get": _operation(
                "Shares offered to other projects and received from them",
                200,
                "Shares",
                params=[
                    *project,
                    _param(
                        "state",
                        "query",
                        {"type": "string", "enum": list(SHARE_STATES)},
                        "only shares in this state (pending: the ones waiting)",
                    ),
                ],
            ),
            "post": _operation(
                "Offer one of the project's datasets read-only to another project (data owners)",
                201,
                "ShareState",
                body="Offer",
                params=project,
            ),
        },
        "/projects/{project}/shares/{dataset}/{target}": {
            "delete": _operation(
                "Revoke a share (data owners of the offering project)",
                200,
                "ShareState",
                params=[*project, _param("dataset"), _param("target")],
            ),
        },
        "/projects/{project}/received/{owner}/{dataset}/accept": {
            "post": _operation(
                "Accept a dataset offered to the project (its data owners)",
                200,
                "ShareState",
                params=[*project, _param("owner"), _param("dataset")],
            ),
        },
        "/projects/{project}/policy": {
            "get": _operation("The project's policy", 200, "ProjectPolicy", params=project),
            "patch": _operation(
                "Change policy settings (hub admins); recorded with before and after",
                200,
                "PolicyResult",
                body="PolicyChange",
                params=project,
            ),
        },
        "/projects/{project}/policy/preview": {
            "post": _operation(
                "What a policy change would give, without changing anything (hub admins)",
                200,
                "PolicyResult",
                body="PolicyChange",
                params=project,
            ),
        },
        "/projects/{project}/sessions": {
            "get": _operation(
                "The project's running sessions: user, node, Slurm job, GPUs, start", 200, "Sessions", params=project
            )
        },
        "/projects/{project}/sessions/{user}": {
            "delete": _operation("Stop a member's session (data owners, hub admins)", 202, "Stopped", params=member)
        },
        "/projects/{project}/runs": {
            "get": _operation(
                "The project's headless runs, newest first (at most 50): state, progress, times, who submitted "
                "them, how they ended. Read only: submit and cancel through the hub's /hub/api/securehpc/runs",
                200,
                "Runs",
                params=project,
            )
        },
        "/projects/{project}/runs/{run}": {
            "get": _operation(
                "One run of the project: state, cells done of the total, times, the failing cell and exception "
                "name (never outputs)",
                200,
                "Run",
                params=[*project, _param("run", schema=RUN_ID)],
            )
        },
        "/audit": {
            "get": _operation(
                "Audit events, newest first (hub admins: all; data owners: their project's, with project=)",
                200,
                "AuditPage",
                params=[
                    _param("project", "query"),
                    _param("user", "query", USER),
                    _param("action", "query", {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"}),
                    _param("outcome", "query", {"type": "string", "enum": sorted(OUTCOMES)}),
                    _param("since", "query", TIME),
                    _param("until", "query", TIME),
                    _param(
                        "before",
                        "query",
                        {"type": "integer", "minimum": 1, "maximum": 2**53},
                        "events older than this seq (the previous page's next)",
                    ),
                    _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": MAX_AUDIT_PAGE}),
                ],
            )
        },
        "/audit/verify": {
            "get": _operation("Whether the audit log's hash chain holds, and its head (hub admins)", 200, "AuditVerify")
        },
    }


def document(server: str) -> dict:
    """The OpenAPI document; ``server``: the API's base path (``/services/securehpc/api/v1``)."""
    components = schemas()
    components["ProjectPolicy"] = _object({"project": NAME, "policy": _ref("Policy")})
    responses = {
        str(code): {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}
        for code, description in (
            (400, "Bad input: what was wrong and what to send; nothing changed, nothing recorded"),
            (403, "Refused (recorded in the audit log), not signed in, no portal scope, or no XSRF token"),
            (404, "Unknown, or a project you are not a member of (the same answer)"),
            (409, "Conflicts with what exists (a taken name, a share's state, the last data owner)"),
            (
                503,
                "The key server, the store, the audit log or the hub did not answer, or a principal's Unix account "
                "could not be made or locked",
            ),
        )
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "jupyter-securehpc project portal",
            "version": "1",
            "description": (
                "Projects, members, datasets, shares, policies, sessions, runs (read only) and the audit log of a "
                "jupyter-securehpc "
                f"hub. Authenticate with a JupyterHub API token carrying `{ACCESS_SCOPE}` (`Authorization: token "
                f"...`); hub admins hold `{ADMIN_SCOPE}`. Browsers signed in through the hub send the `_xsrf` cookie's "
                "value as `X-XSRFToken` with every state-changing request."
            ),
        },
        "servers": [{"url": server}],
        "security": [{"token": []}, {"cookie": []}],
        "paths": paths(),
        "components": {
            "schemas": components,
            "responses": responses,
            "securitySchemes": {
                "token": {"type": "http", "scheme": "bearer", "description": "a JupyterHub API token"},
                "cookie": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "service-securehpc",
                    "description": "the portal's sign-in through the hub (OAuth)",
                },
            },
        },
    }
