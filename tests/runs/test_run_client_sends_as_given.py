"""What ``securehpc run submit`` and ``runs.submit`` send, and what the hub's parser makes of it: pure logic.

The hub is the one place that refuses a submission (and audits it: test_run_refusals_audited.py, against a real
hub), so the client sends what the person gave: ``-p`` values as their text (``parameters_json``), names and
notebook paths as typed, ``-f``'s non-JSON values as the YAML text as written, NaN from Python as its text. Each
body here goes through ``runs.request.parse_parameters``, the hub's own parser, to check the refusal it gets.
Only what the hub never sees stays local: an unreadable or non-YAML ``-f`` file, a value ``json`` cannot encode.
"""

from __future__ import annotations

import argparse
import datetime as dt

import pytest

from jupyter_securehpc.runs import cli
from jupyter_securehpc.runs.client import RunError, RunRefused, split_parameters
from jupyter_securehpc.runs.client import request as run_request
from jupyter_securehpc.runs.request import parse_parameters
from jupyter_securehpc.session.spec import RunRequestError


def submit_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="securehpc")
    cli.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["run", "submit", *argv])


def body_of(*argv: str) -> dict:
    """The request ``securehpc run submit ARGV`` sends (nothing is sent here)."""
    args = submit_args(*argv)
    values, texts = cli._parameters(args)
    return run_request(args.project, args.notebook, values, upload=args.upload, parameters_json=texts)


def hub_says(body: dict) -> str:
    with pytest.raises(RunRequestError) as refused:
        parse_parameters(body.get("parameters"), body.get("parameters_json"))
    message = str(refused.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["-p", "bad-name", "1"], "parameter name 'bad-name' is not a Python identifier"),
        (["-p", "class", "1"], "parameter name 'class' is not a Python identifier"),
        (["-p", "\u0430lpha", "1"], "parameter name '\u0430lpha' ('\\u0430lpha') has letters outside ASCII"),
        (["-p", "x", "nan"], "parameter x: 'nan' is not JSON (NaN and infinities are not JSON numbers); quote text"),
        (["-p", "x", "Infinity"], "parameter x: 'Infinity' is not JSON (NaN and infinities are not JSON numbers)"),
        (["-p", "x", "{bad"], 'parameter x: \'{bad\' is not JSON; quote text as JSON ("{bad") or give it as text '
                              "with -r x TEXT"),
        (["-p", "x", "1e400"], "parameter 'x' is not a JSON number (NaN and infinities are not JSON)"),
        (["-r", "bad name", "text"], "parameter name 'bad name' is not a Python identifier"),
    ],
)  # fmt: skip
def test_the_command_line_sends_names_and_values_as_typed_and_the_hub_refuses_them(argv, says):
    body = body_of("sleep", "a.ipynb", *argv)
    assert body["notebook"] == "a.ipynb"
    if argv[0] == "-p":
        assert body["parameters_json"] == {argv[1]: argv[2]} and body["parameters"] == {}
    assert says in hub_says(body)


def test_good_values_parse_at_the_hub_as_the_person_meant_them():
    body = body_of("sleep", "a.ipynb", "-p", "alpha", "0.5", "-p", "subjects", '["s01", "s02"]', "-r", "label",
                   "night 1", "-p", "flag", "true", "-r", "code", "1); import os  #")  # fmt: skip
    assert body["parameters_json"] == {"alpha": "0.5", "subjects": '["s01", "s02"]', "flag": "true"}
    assert parse_parameters(body["parameters"], body["parameters_json"]) == {
        "label": "night 1",
        "code": "1); import os  #",
        "alpha": 0.5,
        "subjects": ["s01", "s02"],
        "flag": True,
    }


def test_paths_go_as_typed():
    for path in ("../other/x.ipynb", "/etc/passwd.ipynb", "a/../../x.ipynb"):
        assert body_of("sleep", path)["notebook"] == path


def test_a_yaml_file_sends_json_values_and_the_others_as_written(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(
        "alpha: 0.5\n"
        "subjects: [s01, s02]\n"
        "start: 2024-01-31\n"
        "window: [2024-01-01, 3]\n"
        "ratio: .nan\n"
        "limit: -.inf\n"
        "1: one\n"
        "base: &base {a: 1}\n"
        "copy:\n  <<: *base\n  b: 2\n"
        "overridden: 2024-05-05\n"
    )
    body = body_of("sleep", "a.ipynb", "-f", str(params), "-p", "overridden", '"text"', "-r", "alpha", "0.7")
    # A key that is not text goes as written (the hub refuses the name).
    assert body["parameters"] == {"subjects": ["s01", "s02"], "1": "one", "base": {"a": 1}, "copy": {"a": 1, "b": 2},
                                  "alpha": "0.7"}  # fmt: skip
    assert body["parameters_json"] == {"start": "2024-01-31", "window": "[2024-01-01, 3]", "ratio": ".nan",
                                       "limit": "-.inf", "overridden": '"text"'}  # fmt: skip
    assert "parameter name '1' is not a Python identifier" in hub_says(body)
    # The hub refuses the first it meets, naming it; each of them on its own:
    for name, says in [
        ("start", "parameter start: '2024-01-31' is not JSON; quote text as JSON (\"2024-01-31\")"),
        ("window", "parameter window: '[2024-01-01, 3]' is not JSON"),
        ("ratio", "parameter ratio: '.nan' is not JSON (NaN and infinities are not JSON numbers)"),
        ("limit", "parameter limit: '-.inf' is not JSON (NaN and infinities are not JSON numbers)"),
    ]:
        assert says in hub_says({"parameters_json": {name: body["parameters_json"][name]}})


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "cannot read {path}: No such file or directory; nothing was sent to the hub"),
        ("a: [1, 2\n", "{path} is not YAML: "),
        ("- 1\n- 2\n", "{path} must hold NAME: VALUE pairs"),
        ("", "{path} must hold NAME: VALUE pairs"),
        (b"a: \xff\n", "{path} is not YAML (not UTF-8 text)"),
    ],
)
def test_a_parameters_file_that_cannot_be_read_or_is_not_yaml_stays_local(tmp_path, content, says):
    params = tmp_path / "params.yaml"
    if isinstance(content, str):
        params.write_text(content)
    elif content is not None:
        params.write_bytes(content)
    with pytest.raises(RunError) as error:
        body_of("sleep", "a.ipynb", "-f", str(params))
    assert not isinstance(error.value, RunRefused)  # not the hub's refusal: the hub never saw it
    assert says.format(path=params) in str(error.value) and "\n" not in str(error.value)


def test_python_sends_nan_as_text_for_the_hub_and_refuses_only_what_json_cannot_encode():
    values, texts = split_parameters({"a": 1, "x": float("nan"), "y": [1, float("inf")], "bad-name": 2, 7: 1})
    assert values == {"a": 1, "bad-name": 2, 7: 1} and texts == {"x": "NaN", "y": "[1, Infinity]"}
    assert "parameter x: 'NaN' is not JSON (NaN and infinities are not JSON numbers)" in hub_says(
        {"parameters_json": {"x": "NaN"}}
    )
    assert "parameter name 'bad-name'" in hub_says({"parameters": {"bad-name": 2}})
    body = run_request("sleep", "a.ipynb", {"7": 1, "x": float("-inf")})
    assert body["parameters"] == {"7": 1} and body["parameters_json"] == {"x": "-Infinity"}
    # What json cannot encode at all never reaches the hub: refused here, naming it and the fix.
    for parameters, says in [
        ({"when": dt.date(2024, 1, 31)}, "parameter 'when' is a date, which JSON cannot carry: give text (a date as "
                                         "its .isoformat())"),
        ({"ids": {1, 2}}, "parameter 'ids' is a set, which JSON cannot carry"),
        ({(1, 2): 3}, "parameter name '(1, 2)' is a tuple, which JSON cannot carry"),
    ]:  # fmt: skip
        with pytest.raises(RunRefused, match=says.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
            run_request("sleep", "a.ipynb", parameters)
    # Parameters that are not a dict go as given: the hub says what they must be.
    assert run_request("sleep", "a.ipynb", [1, 2])["parameters"] == [1, 2]
    assert "parameters must be a JSON object" in hub_says({"parameters": [1, 2]})


def test_a_name_in_parameters_and_in_parameters_json_is_refused():
    assert "parameter x is given twice (in parameters and in parameters_json)" in hub_says(
        {"parameters": {"x": 1}, "parameters_json": {"x": "2"}}
    )
    assert "parameters_json must be a JSON object" in hub_says({"parameters_json": ["x"]})
    assert "holds each value's JSON text as a string, not int" in hub_says({"parameters_json": {"x": 1}})
