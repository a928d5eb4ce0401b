"""What the rules look at (``RequestFacts``) and what they answer (``Verdict``), shared by every rule module."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from jupyter_securehpc.projects.authz import Action, Decision

# Audit actions of refusals that are not a role decision.
PATH_ACTION = "path.resolve"
ROUTE_ACTION = "route.refused"


@dataclass
class RequestFacts:
    """What the rules may look at; built by the guard from a tornado handler, or by tests from plain values."""

    method: str
    route: str  # percent-decoded path below base_url, starting with "/", no query
    handler_class: type
    path_args: list[str] = field(default_factory=list)
    path_kwargs: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)  # each argument as the handler reads it (last, stripped)
    body: bytes = b""

    def json_body(self) -> dict[str, Any] | None:
        """The body parsed the way jupyter-server's ``get_json_body`` does; ``ValueError`` if it cannot."""
        if not self.body:
            return None
        model = json.loads(self.body.strip().decode("utf-8"))
        if model is not None and not isinstance(model, dict):
            raise ValueError("JSON body is not an object")
        return model


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    status: int = 200
    reason: str = ""
    action: str = ""


ALLOW = Verdict(True)


def refuse(status: int, reason: str, action: str) -> Verdict:
    return Verdict(False, status, reason, action)


def refuse_route(reason: str) -> Verdict:
    """A refusal that is not a role decision: the route, or this use of it, is off in secure projects."""
    return Verdict(False, 403, reason, ROUTE_ACTION)


def by_policy(decision: Decision, action: Action) -> Verdict | None:
    """None when ``decision`` allows, else a 403 saying why (the reason comes from ``projects.authz``)."""
    return None if decision else refuse(403, decision.reason, action.value)


def read_only_method(facts: RequestFacts, what: str) -> Verdict | None:
    """None for GET and HEAD; a refusal naming ``what`` for every other method."""
    if facts.method in ("GET", "HEAD"):
        return None
    return refuse_route(f"{what} is read-only in secure projects ({facts.method} refused)")
