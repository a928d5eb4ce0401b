"""A schema fuzz run against the served OpenAPI document (schemathesis), bounded in examples: no answer is a
server error or breaks the document (status, content type, body schema), and no refused request changes
anything in the projects database. Run as a person outside the project and as its data owner, with values
that fit the schema and values that do not."""

from __future__ import annotations

import portal_site
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from portal_site import OUTSIDER, OWNER, state
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

EXAMPLES = 6  # per operation, person and mode: about 400 requests in all
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def schema(site):
    document = requests.get(f"{site['base']}/openapi.json", timeout=30).json()
    return schemathesis.openapi.from_dict(document)


def operations(schema) -> list:
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
@pytest.mark.parametrize("who", [OUTSIDER, OWNER])
def test_fuzz_the_api(site, schema, who, mode):
    base_url = site["base"]
    headers = {"Authorization": f"token {site['tokens'][who]}"}
    failures = []

    def fuzz(operation) -> None:
        @given(case=operation.as_strategy(generation_mode=mode), pin=st.booleans())
        @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        def run(case, pin) -> None:
            if pin and case.path_parameters and "project" in case.path_parameters:
                case.path_parameters["project"] = "alpha"  # the owner's project, which the outsider is not in
            before = state(site)["db"]
            response = case.call(base_url=base_url, headers=headers)
            try:
                case.validate_response(response, checks=CHECKS)
            except Exception as error:
                failures.append(f"{operation.label} {case.path_parameters} -> {response.status_code}: {error}")
                return
            if response.status_code >= 400:
                assert state(site)["db"] == before, f"{operation.label} {response.status_code} changed the database"

        try:
            run()
        except Unsatisfiable:
            nothing_to_break.append(operation.label)  # no parameter or body that could be made invalid

    nothing_to_break: list[str] = []
    for operation in operations(schema):
        fuzz(operation)
    assert len(nothing_to_break) < len(operations(schema)) / 2, nothing_to_break
    assert not failures, "\n\n".join(failures[:10])


def test_the_document_is_what_the_portal_serves(site):
    from jupyter_securehpc.portal.openapi import document

    served = requests.get(f"{site['base']}/openapi.json", timeout=30).json()
    assert served == document("/services/securehpc/api/v1")
    assert portal_site.api(site, "GET", "/openapi.json").headers["Content-Type"].startswith("application/json")
