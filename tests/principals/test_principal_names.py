"""The names of principals and project groups: valid Unix names, readable, deterministic, kept apart.

Pure logic (no root, no cluster): part of the no-root tier.
"""

from __future__ import annotations

import itertools

import pytest

from jupyter_securehpc.principals import DEFAULT_PREFIX, InvalidAccountName, group_name, principal_name
from jupyter_securehpc.principals.names import MAX_NAME, UNIX_NAME, validate_account_name, validate_prefix

PROJECTS = ["sleep", "sleep-study", "Sleep_Study.2", "Genome", "Ωmega", "a" * 64, "x", "cardio", "Études-2024"]
USERS = ["bob", "alice", "alice@example.org", "Bob", "b.o.b", "bo_b", "securehpc-test5", "u" * 255, "+", "1"]


@pytest.mark.parametrize(("project", "user"), list(itertools.product(PROJECTS, USERS)))
def test_every_principal_name_is_a_valid_unix_name_of_at_most_32_characters(project, user):
    name = principal_name(DEFAULT_PREFIX, project, user)
    assert UNIX_NAME.fullmatch(name) and len(name) <= MAX_NAME
    assert name.startswith(DEFAULT_PREFIX) and name != user
    assert validate_account_name(name) == name


def test_names_are_readable_and_the_same_every_time():
    assert principal_name("shpc-", "sleep", "bob").startswith("shpc-sleep_bob_")
    assert principal_name("shpc-", "sleep", "bob") == principal_name("shpc-", "sleep", "bob")
    assert group_name("shpc-", "sleep").startswith("shpc-sleep_")
    # Projects compare by their name key, as everywhere: a look-alike project cannot exist beside it anyway.
    assert principal_name("shpc-", "Sleep", "bob") == principal_name("shpc-", "sleep", "bob")


def test_distinct_pairs_get_distinct_names_also_where_the_readable_parts_agree():
    names = {(p, u): principal_name(DEFAULT_PREFIX, p, u) for p, u in itertools.product(PROJECTS, USERS)}
    # "Sleep" and "sleep" are one project (same name key); every other pair has its own principal.
    pairs = {(p.casefold(), u) for p, u in names}
    assert len(set(names.values())) == len(pairs)
    # Readable parts that fold to the same text ("bob", "Bob", "b.o.b", "bo_b") are told apart by the hash.
    assert len({principal_name(DEFAULT_PREFIX, "sleep", u) for u in ("bob", "Bob", "b.o.b", "bo_b")}) == 4
    # Group names of distinct projects differ; a principal never has its project group's name.
    groups = {group_name(DEFAULT_PREFIX, p) for p in PROJECTS if p != "Sleep_Study.2"}
    assert len(groups) == len(PROJECTS) - 1
    assert not groups & set(names.values())


def test_the_prefix_keeps_sites_apart_and_is_checked():
    assert principal_name("t1a2b-", "sleep", "bob") != principal_name("shpc-", "sleep", "bob")
    for bad in ("", "Shpc-", "-x", "x_y", "toolongpre", "a b", "é-"):
        with pytest.raises(InvalidAccountName, match="prefix"):
            validate_prefix(bad)


@pytest.mark.parametrize("bad", ["", "root/x", "../x", "Alice", "-x", "a" * 33, "1abc", "a b", "a:b", "ä", None, 3])
def test_account_names_from_outside_are_checked_before_any_use(bad):
    with pytest.raises(InvalidAccountName):
        validate_account_name(bad)
