"""Project and dataset names, ``OWNER/DATASET`` references and the store layout: every kind of bad input is
refused with a message that says why."""

from __future__ import annotations

import re

import pytest

from jupyter_securehpc.keys import KeyPaths
from jupyter_securehpc.vocabulary import DatasetRef, InvalidName, StoreLayout, name_key, validate_name


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


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sleep", "is not PROJECT/DATASET"),
        ("sleep/", "is not PROJECT/DATASET"),
        ("/psg", "is not PROJECT/DATASET"),
        ("sleep/psg/x", "is not PROJECT/DATASET"),
        ("", "is not PROJECT/DATASET"),
        ("../psg", "contains '..'"),
        ("sleep/..", "contains '..'"),
        ("sleep/ps g", "contains whitespace"),
        ("sl*ep/psg", "project name 'sl*ep' contains"),
        (None, "is not a string"),
        (["sleep", "psg"], "is not a string"),
    ],
)
def test_bad_dataset_references_are_refused(text, message):
    with pytest.raises(InvalidName, match=re.escape(message)):
        DatasetRef.parse(text)


def test_a_dataset_reference_reads_back_as_it_is_written():
    ref = DatasetRef.parse("Schlaf-2024/psg.v1")
    assert (ref.owner, ref.dataset, str(ref), f"{ref}") == ("Schlaf-2024", "psg.v1", *["Schlaf-2024/psg.v1"] * 2)
    assert ref == ("Schlaf-2024", "psg.v1")  # a pair, wherever pairs were used
    with pytest.raises(InvalidName, match="dataset name is empty"):
        DatasetRef.of("sleep", "")


def test_the_store_layout_and_the_key_paths_have_one_shape(tmp_path):
    stores, keys = StoreLayout(tmp_path), KeyPaths(mount="kv", prefix="site")
    assert stores.workspace("sleep") == tmp_path / "projects" / "sleep" / "workspace"
    assert stores.dataset("mri", "scans") == tmp_path / "projects" / "mri" / "datasets" / "scans"
    assert stores.datasets_dir("mri") == stores.dataset("mri", "scans").parent
    assert stores.project_dir("mri") == stores.workspace("mri").parent
    assert keys.workspace("sleep") == "site/" + str(stores.workspace("sleep").relative_to(tmp_path))
    assert keys.dataset("mri", "scans") == "site/" + str(stores.dataset("mri", "scans").relative_to(tmp_path))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.workspace("../other"), "contains '..'"),
        (lambda s: s.project_dir("a/b"), "contains '/'"),
        (lambda s: s.dataset("mri", "../../etc"), "contains '..'"),
        (lambda s: s.dataset("mri", ""), "dataset name is empty"),
        (lambda s: s.datasets_dir(""), "project name is empty"),
    ],
)
def test_the_store_layout_refuses_names_that_would_point_elsewhere(tmp_path, call, message):
    with pytest.raises(InvalidName, match=re.escape(message)):
        call(StoreLayout(tmp_path))
