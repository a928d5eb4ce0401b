"""The OpenAPI document and the portal's routes agree: every route and method the application serves is in
the document, and everything the document promises is served. No hub needed."""

from __future__ import annotations

import re

import schemathesis

from jupyter_securehpc.portal import API_PREFIX
from jupyter_securehpc.portal.api import ROUTES
from jupyter_securehpc.portal.app import api_routes, route_pattern
from jupyter_securehpc.portal.openapi import document

METHODS = ("get", "post", "put", "patch", "delete")


def served() -> set[tuple[str, str]]:
    return {(path, method) for path, handler in ROUTES for method in METHODS if method in vars(handler)}


def documented() -> set[tuple[str, str]]:
    return {(path, method) for path, item in document("/x")["paths"].items() for method in item if method in METHODS}


def test_every_route_is_documented_and_every_documented_route_is_served():
    assert served() - documented() == set(), "served but not in the OpenAPI document"
    assert documented() - served() == set(), "in the OpenAPI document but not served"


def test_path_parameters_are_documented():
    for path, item in document("/x")["paths"].items():
        names = set(re.findall(r"\{([a-z_]+)\}", path))
        for method, operation in item.items():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == names, (path, method)


def test_routes_match_only_their_own_segments():
    pattern = route_pattern("/projects/{project}/members/{user}")
    assert re.fullmatch(pattern, "/projects/alpha/members/bob")
    assert not re.fullmatch(pattern, "/projects/alpha/members/bob/extra")
    assert not re.fullmatch(pattern, "/projects/a/b/members/bob")
    routes = [path for path, _ in api_routes("/services/securehpc/")]
    assert all(path.startswith(f"/services/securehpc/{API_PREFIX}/") for path in routes)


def test_the_document_is_valid_openapi():
    schema = schemathesis.openapi.from_dict(document("/services/securehpc/api/v1"))
    labels = {result.ok().label for result in schema.get_all_operations()}
    assert len(labels) == len(documented())
