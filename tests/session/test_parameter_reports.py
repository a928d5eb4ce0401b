"""The notebook parameter index's reports (``session.parameters``): a notebook's names as papermill reads them,
the three report shapes and nothing else, and the launcher's side of the audit pipe that checks each change with
the hub's parser before posting it (a change that does not parse becomes an audit event instead)."""

from __future__ import annotations

import json

import nbformat
import pytest

from jupyter_securehpc.node.hubreport import HubReporter, parameters_refusal, take_pipe_line
from jupyter_securehpc.session.parameters import (
    MAX_NAMES,
    MAX_PARAMETERS_BODY,
    NotebookUnreadable,
    ParametersChange,
    parameter_names,
    parameters_report,
    parse_parameters_report,
    text_parameter_names,
)
from jupyter_securehpc.session.reports import ReportError


def notebook_text(parameters: str | None, kernel: bool = True) -> str:
    document = nbformat.v4.new_notebook()
    if kernel:
        document.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cells = [nbformat.v4.new_code_cell("print(1)")]
    if parameters is not None:
        cell = nbformat.v4.new_code_cell(parameters)
        cell.metadata["tags"] = ["parameters"]
        cells.insert(0, cell)
    document.cells = cells
    return nbformat.writes(document)


def test_names_are_read_by_papermill_in_the_cells_order_never_values(tmp_path):
    path = tmp_path / "sweep.ipynb"
    path.write_text(notebook_text('alpha = 0.5\nsubjects = ["s01"]  # who\nlabel: str = "secret-default"'))
    assert parameter_names(path) == ("alpha", "subjects", "label")
    assert text_parameter_names(path.read_text()) == ("alpha", "subjects", "label")


def test_a_notebook_without_a_parameters_cell_has_no_names():
    assert text_parameter_names(notebook_text(None)) == ()
    assert text_parameter_names(notebook_text(None, kernel=False)) == ()


def test_a_notebook_papermill_cannot_read_is_unreadable_and_the_message_quotes_nothing_of_it():
    with pytest.raises(NotebookUnreadable, match="papermill cannot read its parameters cell: No kernel name"):
        text_parameter_names(notebook_text("alpha = 1", kernel=False))
    with pytest.raises(NotebookUnreadable) as raised:
        text_parameter_names('{"cells": "CANARY-not-a-notebook"}')
    assert "CANARY" not in str(raised.value)


def test_names_are_bounded(tmp_path):
    many = "\n".join(f"p{i} = {i}" for i in range(MAX_NAMES + 20))
    long = "x" * 65
    names = text_parameter_names(notebook_text(f"{long} = 1\n{many}"))
    assert len(names) == MAX_NAMES and long not in names and names[0] == "p0"


@pytest.mark.parametrize(
    ("payload", "change"),
    [
        ({"saved": "analysis/sweep.ipynb", "names": ["alpha", "subjects"]},
         ParametersChange("analysis/sweep.ipynb", names=("alpha", "subjects"))),
        ({"saved": "a.ipynb", "names": []}, ParametersChange("a.ipynb", names=())),
        ({"renamed": "old", "to": "new/place"}, ParametersChange("old", renamed_to="new/place")),
        ({"deleted": "analysis"}, ParametersChange("analysis", deleted=True)),
    ],
)  # fmt: skip
def test_the_three_shapes_parse_and_are_built_back_exactly(payload, change):
    assert parse_parameters_report(json.dumps(payload).encode()) == change
    assert parameters_report(change) == payload


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        ([], "JSON object"),
        ({}, "must be exactly"),
        ({"saved": "a.ipynb"}, "must be exactly"),
        ({"saved": "a.ipynb", "names": [], "values": {"alpha": 1}}, "must be exactly"),
        ({"saved": "a.ipynb", "names": [], "project": "other"}, "must be exactly"),
        ({"saved": "a.txt", "names": []}, "notebook's path"),
        ({"saved": "/etc/a.ipynb", "names": []}, "relative path"),
        ({"saved": "../a.ipynb", "names": []}, "'..'"),
        ({"saved": ".hidden/a.ipynb", "names": []}, "hidden"),
        ({"saved": "a\nb.ipynb", "names": []}, "control characters"),
        ({"saved": "a.ipynb", "names": ["1x"]}, "Python identifiers"),
        ({"saved": "a.ipynb", "names": ["class"]}, "Python identifiers"),
        ({"saved": "a.ipynb", "names": ["x" * 65]}, "Python identifiers"),
        ({"saved": "a.ipynb", "names": ["a", "a"]}, "distinct"),
        ({"saved": "a.ipynb", "names": [f"p{i}" for i in range(MAX_NAMES + 1)]}, "at most 100"),
        ({"saved": "a.ipynb", "names": "alpha"}, "list"),
        ({"saved": "a.ipynb", "names": [1]}, "identifiers"),
        ({"renamed": "a", "to": ""}, "1 to 1024"),
        ({"deleted": "a/../../x"}, "'..'"),
        ({"deleted": "x" * 1025}, "1 to 1024"),
    ],
)
def test_anything_else_is_refused_naming_what_was_wrong(payload, says):
    with pytest.raises(ReportError, match=says.replace("(", r"\(").replace(".", r"\.")):
        parse_parameters_report(json.dumps(payload).encode())


def test_an_oversized_report_is_refused_before_it_is_decoded():
    body = b'{"deleted": "' + b"a" * MAX_PARAMETERS_BODY + b'"}'
    with pytest.raises(ReportError, match="longer than"):
        parse_parameters_report(body)
    with pytest.raises(ReportError, match="not JSON"):
        parse_parameters_report(b"{not json")


def test_the_launcher_queues_valid_changes_and_audits_the_others_instead_of_posting_them():
    reporter = HubReporter(base_url="", secret="")
    refused = lambda reason: parameters_refusal("alice", "sleep", reason)  # noqa: E731
    try:
        take_pipe_line({"parameters": {"saved": "a.ipynb", "names": ["alpha"]}}, reporter, refused)
        assert list(reporter.pending_parameters) == [ParametersChange("a.ipynb", names=("alpha",))]
        assert reporter.pending == deque_of()
        # Malformed: names that are not identifiers, an extra key beside the change, values.
        take_pipe_line({"parameters": {"saved": "a.ipynb", "names": ["os.system('x')"]}}, reporter, refused)
        take_pipe_line({"parameters": {"deleted": "a.ipynb"}, "actor": "bob"}, reporter, refused)
        take_pipe_line({"parameters": {"saved": "a.ipynb", "names": [], "values": {"a": "CANARY"}}}, reporter, refused)
        assert len(reporter.pending_parameters) == 1 and reporter.dropped_parameters == 3
        events = list(reporter.pending)
        assert [(e["actor"], e["action"], e["project"], e["outcome"]) for e in events] == [
            ("alice", "session.parameters", "sleep", "denied")
        ] * 3  # fmt: skip
        assert "Python identifiers" in events[0]["reason"] and "nothing else" in events[1]["reason"]
        assert all("CANARY" not in json.dumps(e) for e in events)
        # An audit event of the server extension passes as before.
        take_pipe_line({"action": "contents.download", "actor": "alice"}, reporter, refused)
        assert reporter.pending[-1]["action"] == "contents.download"
    finally:
        reporter.close()


def deque_of(*items):
    from collections import deque

    return deque(items)
