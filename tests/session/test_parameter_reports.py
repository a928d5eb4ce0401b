"""The notebook parameter index's reports (``session.parameters``): a notebook's names as papermill reads them,
the three report shapes and nothing else, and the launcher's side of the audit pipe that checks each change with
the hub's parser before posting it (a change that does not parse becomes an audit event instead)."""

from __future__ import annotations

import json
import logging

import nbformat
import pytest

from jupyter_securehpc.node.hubreport import HubReporter, parameters_refusal, take_pipe_line
from jupyter_securehpc.session.parameters import (
    MAX_NAMES,
    MAX_PARAMETERS_BODY,
    NotebookUnreadable,
    ParametersChange,
    _read_well_formed,
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


def v4(cells: list, minor: int = 5, metadata: object = None, **top: object) -> dict:
    """An nbformat 4 notebook as JSON data, cells as given (possibly malformed)."""
    kernel = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    return {"cells": cells, "metadata": kernel if metadata is None else metadata, "nbformat": 4,
            "nbformat_minor": minor, **top}  # fmt: skip


def code(source: object, tags: object = "none", **extra: object) -> dict:
    metadata = {} if tags == "none" else {"tags": tags}
    return {"cell_type": "code", "execution_count": None, "metadata": metadata, "outputs": [], "source": source,
            **extra}  # fmt: skip


PARAMS = code("alpha = 0.5\nsubjects = [\n  's01',  # first\n  's02',\n]\nlabel: str = 'x'  # help\n", ["parameters"])
# (case, notebook's JSON data or raw text or bytes, whether the short way answers, False: papermill itself is asked);
# the outcome must be papermill's. Texts that nbformat's reader refuses (before any check of ours) fail the short way
# exactly as they fail in papermill's nbformat.reads.
NOTEBOOKS = [
    ("plain", v4([code("print(1)", id="a"), {**PARAMS, "id": "b"}]), True),
    ("source as a list of lines", v4([code(["alpha = 1\n", "beta = 'two'\n"], ["parameters"], id="p")]), True),
    ("no parameters cell", v4([code("alpha = 1", id="a")]), True),
    ("no parameters cell, no kernel", v4([code("alpha = 1", id="a")], metadata={}), True),
    ("parameters but no kernel name", v4([{**PARAMS, "id": "p"}], metadata={"language_info": {"name": "python"}}),
     True),
    ("kernel name only in language_info", v4([{**PARAMS, "id": "p"}],
                                            metadata={"kernelspec": {"name": "python3"}}), True),
    ("R, which papermill does not inspect", v4([code("alpha <- 1", ["parameters"], id="p")],
                                               metadata={"kernelspec": {"name": "ir", "language": "R"}}), True),
    ("a kernel papermill has no translator for", v4([code("alpha = 1", ["parameters"], id="p")],
                                                    metadata={"kernelspec": {"name": "cobol", "language": "cobol"}}),
     True),
    ("a kernel name that is a number", v4([{**PARAMS, "id": "p"}],
                                          metadata={"kernelspec": {"name": 5, "language": "python"}}), True),
    ("two parameters cells: the first", v4([code("first = 1", ["parameters"], id="a"),
                                            code("second = 2", ["parameters"], id="b")]), True),
    ("tags as a string (papermill tests 'in')", v4([code("alpha = 1", "myparameters", id="a")]), True),
    ("tags as an object", v4([code("alpha = 1", {"parameters": 1}, id="a")]), True),
    ("tags null in a later cell", v4([{**PARAMS, "id": "a"}, code("x = 1", None, id="b")]), True),
    ("several tags", v4([code("alpha = 1", ["x", "parameters"], id="a")]), True),
    ("lines with two '=' are skipped", v4([code("a = b = 1\nalpha = 2\nlimit = x == 3", ["parameters"], id="a")]),
     True),
    ("minor 4, no ids (upgraded)", v4([code("print(1)"), PARAMS], minor=4), True),
    ("minor 5, ids missing", v4([code("print(1)"), PARAMS]), True),
    ("duplicate ids", v4([code("print(1)", id="a"), {**PARAMS, "id": "a"}]), True),
    ("invalid by the schema (unknown keys)", v4([{**PARAMS, "id": "a", "colour": "red"}], extra_top="x"), True),
    ("a minor version without a schema", v4([{**PARAMS, "id": "a"}], minor=99), True),
    ("an id that is a number", v4([{**PARAMS, "id": 7}]), False),
    ("an id that is a list", v4([{**PARAMS, "id": ["a"]}]), False),
    ("a cell that is not an object", v4(["alpha = 1", {**PARAMS, "id": "a"}]), True),
    ("cell metadata that is a list", v4([{**code("x = 1", id="a"), "metadata": []}, {**PARAMS, "id": "b"}]), True),
    ("cells that are a string", v4("CANARY"), True),
    ("no cells", {"metadata": {}, "nbformat": 4, "nbformat_minor": 5}, True),
    ("notebook metadata that is a list", v4([{**PARAMS, "id": "a"}], metadata=[]), True),
    ("no minor version", {"cells": [{**PARAMS, "id": "a"}], "metadata": {}, "nbformat": 4}, False),
    ("version 4.0 as a float", {**v4([{**PARAMS, "id": "a"}]), "nbformat": 4.0}, False),
    ("nbformat 3 (converted by papermill)", {"metadata": {"kernelspec": {"name": "python3", "language": "python"}},
     "nbformat": 3, "nbformat_minor": 0, "worksheets": [{"cells": [{"cell_type": "code", "input": "alpha = 1",
     "language": "python", "metadata": {"tags": ["parameters"]}, "outputs": []}]}]}, False),
    ("not JSON", "{not json", True),
    ("a JSON list", "[1, 2]", True),
    ("not UTF-8", b'{"cells": [], "metadata": {"x": "\xff"}, "nbformat": 4, "nbformat_minor": 5}', True),
    ("a byte order mark", "\ufeff" + json.dumps(v4([{**PARAMS, "id": "a"}])), True),
]  # fmt: skip


def papermill_says(path) -> tuple:
    import warnings

    import papermill

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = papermill.inspect_notebook(str(path))
    except Exception:
        return ("unreadable",)
    return ("names", tuple(name for name in found if name.isidentifier() and len(name) <= 64)[:MAX_NAMES])


def we_say(path) -> tuple:
    try:
        return ("names", parameter_names(path))
    except NotebookUnreadable:
        return ("unreadable",)


@pytest.mark.parametrize(("case", "content", "short"), NOTEBOOKS, ids=[case for case, _, _ in NOTEBOOKS])
def test_names_are_what_papermill_inspect_notebook_finds_whichever_way_they_are_read(tmp_path, case, content, short):
    path = tmp_path / "nb.ipynb"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    expected = papermill_says(path)
    assert we_say(path) == expected
    # The short way (no validation of the whole notebook) answers where it is sure to agree, and only there.
    try:
        answered = _read_well_formed(str(path)) is not None
    except Exception:
        answered = True  # and failed as papermill does
    assert answered == short
    if isinstance(content, dict):  # the hub's way: an upload's text, read from a memory file
        try:
            assert ("names", text_parameter_names(json.dumps(content))) == expected
        except NotebookUnreadable:
            assert expected == ("unreadable",)


def test_a_path_papermill_would_format_is_read_by_papermill_itself(tmp_path):
    path = tmp_path / "run_{date}.ipynb"
    path.write_text(json.dumps(v4([{**PARAMS, "id": "a"}])))
    assert _read_well_formed(str(path)) is None
    assert we_say(path) == papermill_says(path) == ("unreadable",)  # papermill: "Missing parameter 'date'"


def test_papermill_logs_no_line_of_the_parameters_cell(tmp_path, caplog):
    # papermill's translator logs a line it cannot parse, a parameter's value: in a session (or at the hub) that
    # would land in a log outside the project.
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(v4([code("alpha = 1\nlimit = secret == 'CANARY-value'", ["parameters"], id="a")])))
    caplog.set_level(logging.DEBUG)
    assert parameter_names(path) == ("alpha",)
    assert text_parameter_names(path.read_text()) == ("alpha",)
    broken = json.dumps(v4([code("limit = secret == 'CANARY-value'", ["parameters"], id="a")], minor="x"))
    with pytest.raises(NotebookUnreadable):
        text_parameter_names(broken)  # read by papermill itself (the minor version is no number), which logs
    assert not [record for record in caplog.records if record.name.startswith("papermill")]
    papermill_says(path)  # papermill alone logs it: the test would see it
    assert "CANARY" in caplog.text


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
