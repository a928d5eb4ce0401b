"""Project and dataset names: every kind of bad name is refused with a message that says why."""

from __future__ import annotations

import pytest

from jupyter_securehpc.projects.names import InvalidName, name_key, validate_name


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "empty"),
        ("a" * 65, "65 characters"),
        ("a/b", "'/'"),
        ("/abs", "'/'"),
        ("a\\b", "'\\\\'"),
        ("..", "'..'"),
        ("a..b", "'..'"),
        ("a\0b", "NUL"),
        ("a b", "whitespace"),
        ("a\tb", "whitespace"),
        ("a\u00a0b", "whitespace"),
        ("cafe\u0301", "NFC"),
        ("a\u200bb", "U+200B"),
        ("-lead", "starts with"),
        (".hidden", "starts with"),
        ("semi;colon", "';'"),
        ("dollar$", "'$'"),
        ("back`tick", "'`'"),
        ("new\nline", "whitespace"),
        ("emoji\U0001f600", "U+1F600"),
    ],
)
def test_bad_names_are_refused(name, message):
    with pytest.raises(InvalidName) as error:
        validate_name("project", name)
    assert message in str(error.value)
    assert "project name" in str(error.value)


@pytest.mark.parametrize("name", ["a", "sleep-study_2024.v1", "a" * 64, "café", "Schlafstudie", "研究", "7T-MRI"])
def test_good_names_pass_unchanged(name):
    assert validate_name("dataset", name) == name


@pytest.mark.parametrize(
    ("first", "second"),
    [("Genome", "genome"), ("ﬁle", "file"), ("STRASSE", "straße"), ("\uff30roj", "proj")],
)
def test_look_alike_names_collide(first, second):
    assert name_key(first) == name_key(second)
