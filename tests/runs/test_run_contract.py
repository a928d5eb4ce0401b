"""The run contract: the run spec inside the signed session spec, its one parser, and the run reports' parsers.

Pure logic, no services: what the hub accepts from a user is what the node accepts from the hub, and the few
numbers and names a run may tell the hub are parsed strictly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from jupyter_securehpc import jobspec
from jupyter_securehpc.projects.roles import Role
from jupyter_securehpc.session import reports
from jupyter_securehpc.session.spec import (
    MAX_PARAMETERS_BYTES,
    RunRequestError,
    RunSpec,
    SessionSpec,
    SpecError,
    validate_kernel,
    validate_notebook_path,
    validate_parameters,
)


def run_spec(**changes: object) -> SessionSpec:
    values = {
        "project": "sleep",
        "user": "bob",
        "principal": "shpc-sleep_bob_abc123",
        "role": Role.DATA_SCIENTIST,
        "store_root": Path("/srv/stores"),
        "vault_addr": "http://127.0.0.1:8200",
        "datasets": (("mri", "scans"),),
        "run": RunSpec("0123456789ab", "analysis/sweep.ipynb", {"alpha": 0.5, "names": ["a", "b"]}, "python3"),
    }
    return SessionSpec(**{**values, **changes})


def test_the_run_travels_inside_the_signed_spec():
    key = Ed25519PrivateKey.generate()
    spec = run_spec()
    parsed = jobspec.verify_session_spec(jobspec.sign(spec, key), key.public_key())
    assert parsed == spec and parsed.run.parameters == {"alpha": 0.5, "names": ["a", "b"]}
    assert parsed.run.output_notebook == "runs/0123456789ab/sweep.ipynb"
    assert parsed.run.log_file == "runs/0123456789ab/run.log"
    # A session's spec has no "run" at all: nodes of earlier releases read it as before.
    assert "run" not in run_spec(run=None).to_dict()


@pytest.mark.parametrize(
    ("run", "says"),
    [
        ({"run_id": "0123", "notebook": "../x.ipynb"}, "contains '..'"),
        ({"run_id": "0123", "notebook": "/etc/x.ipynb"}, "outside the project's workspace"),
        ({"run_id": "0123", "notebook": "a.ipynb", "parameters": {"1x": 1}}, "not a Python identifier"),
        ({"run_id": "0123", "notebook": "a.ipynb", "parameters": []}, "JSON object"),
        ({"run_id": "0123", "notebook": "a.ipynb", "kernel": "py 3"}, "not a kernel name"),
        ({"run_id": "../x", "notebook": "a.ipynb"}, "not a run id"),
        ({"run_id": "0123", "notebook": "a.ipynb", "code": "import os"}, "must be an object of"),
        ("a.ipynb", "must be an object of"),
    ],
)
def test_the_node_refuses_a_run_it_cannot_trust(run, says):
    data = run_spec().to_dict()
    data["run"] = run
    with pytest.raises(SpecError, match=says):
        SessionSpec.from_dict(json.loads(json.dumps(data)))


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("", "give the notebook"),
        ("../other/x.ipynb", "contains '..'"),
        ("a/../../x.ipynb", "contains '..'"),
        ("/project/a.ipynb", "outside the project's workspace"),
        ("a//b.ipynb", "empty or '.' part"),
        ("./a.ipynb", "empty or '.' part"),
        (".hidden/a.ipynb", "hidden part"),
        ("a\\b.ipynb", "backslashes"),
        ("a\nb.ipynb", "control characters"),
        ("notes.txt", "not a notebook"),
        ("x" * 2000 + ".ipynb", "at most 1024"),
    ],
)
def test_notebook_paths_outside_the_workspace_are_refused(path, says):
    with pytest.raises(RunRequestError, match=says) as refused:
        validate_notebook_path(path)
    assert "\n" not in str(refused.value)


def test_notebook_paths_inside_the_workspace_pass():
    for path in ("a.ipynb", "analysis/sweep v2.ipynb", "runs/abc/a.ipynb", "Ärzte/EEG.ipynb"):
        assert validate_notebook_path(path) == path


@pytest.mark.parametrize(
    ("parameters", "says"),
    [
        ({"alpha beta": 1}, "not a Python identifier"),
        ({"import": 1}, "not a Python identifier"),
        ({"__class__": 1}, "starts with '__'"),
        ({"x": float("nan")}, "NaN and infinities"),
        ({"x": float("inf")}, "NaN and infinities"),
        ({"x": {1: 2}}, "key that is not a string"),
        ({"x": {1, 2}}, "not a JSON value"),
        ({"x": b"bytes"}, "not a JSON value"),
        ({"x": 2**70}, "too large"),
        ({"x": [[[[[[[[[[[1]]]]]]]]]]]}, "nested deeper"),
        ({"x": "a" * (MAX_PARAMETERS_BYTES + 1)}, "at most"),
        ({f"p{i}": i for i in range(101)}, "at most 100"),
    ],
)
def test_parameters_are_json_data_within_limits(parameters, says):
    with pytest.raises(RunRequestError, match=says) as refused:
        validate_parameters(parameters)
    assert "\n" not in str(refused.value)


def test_parameters_that_look_like_code_are_plain_strings():
    value = "1); import os; os.system('x')  #"
    assert validate_parameters({"patient": value, "cfg": {"a": [1, 2.5, None, True]}})["patient"] == value
    assert validate_kernel(None) is None and validate_kernel("python3") == "python3"


def test_run_progress_reports_are_two_bounded_numbers():
    assert reports.parse_run_progress(b'{"cells_done": 3, "cells_total": 10}') == (3, 10)
    for body in (
        b'{"cells_done": 11, "cells_total": 10}',
        b'{"cells_done": 1}',
        b'{"cells_done": "1", "cells_total": 2}',
        b'{"cells_done": 1, "cells_total": 2, "output": "x"}',
        b"[]",
        b"x" * 200,
    ):
        with pytest.raises(reports.ReportError):
            reports.parse_run_progress(body)


def test_run_end_reports_carry_names_and_numbers_only():
    failed = reports.parse_run_end(b'{"outcome": "failed", "exit_code": 1, "cell": 4, "exception": "ValueError"}')
    assert (failed.outcome, failed.cell, failed.exception) == ("failed", 4, "ValueError")
    refused = reports.RunEnd("refused", exit_code=3, unknown=("betaa",), known=("alpha", "beta"))
    assert reports.parse_run_end(json.dumps(reports.run_end_report(refused)).encode()) == refused
    for body in (
        {"outcome": "failed", "exception": "ValueError: patient 12 has ..."},  # a message is project data
        {"outcome": "failed", "evalue": "x"},
        {"outcome": "succeeded", "cell": 2},
        {"outcome": "refused", "unknown": ["a b"], "known": []},
        {"outcome": "failed", "problem": "anything"},
        {"outcome": "done"},
    ):
        with pytest.raises(reports.ReportError):
            reports.parse_run_end(json.dumps(body).encode())


def test_run_messages_are_one_printable_line():
    assert reports.parse_run_message(b'{"message": "the session key was refused"}') == "the session key was refused"
    for body in (b'{"message": "a\\nb"}', b'{"message": ""}', b'{"message": "x", "y": 1}'):
        with pytest.raises(reports.ReportError):
            reports.parse_run_message(body)
