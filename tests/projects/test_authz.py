"""Who may do what: one table over every role and every action, under a strict and a permissive policy."""

from __future__ import annotations

import pytest

from jupyter_securehpc.projects.authz import Action, Subject, decide
from jupyter_securehpc.projects.policy import Policy
from jupyter_securehpc.projects.roles import Role

A = Action
OWNER, SCIENTIST, OBSERVER, OUTSIDER, ADMIN = "data_owner", "data_scientist", "observer", "non-member", "admin"
EVERYONE = (OWNER, SCIENTIST, OBSERVER, OUTSIDER, ADMIN)

STRICT = Policy()  # the defaults: no downloads, uploads by data owners, no terminals
PERMISSIVE = Policy().with_settings(
    ["download_roles=data_owner,data_scientist", "upload_roles=data_owner,data_scientist,observer", "terminals=true"]
)

# action -> who is allowed under STRICT; the others are refused.
STRICT_TABLE = {
    A.PROJECT_CREATE: {ADMIN},
    A.POLICY_SET: {ADMIN},
    A.KEY_WRAP: {ADMIN},
    A.AUDIT_READ: {ADMIN},
    A.PROJECT_SHOW: {OWNER, SCIENTIST, OBSERVER, ADMIN},
    A.POLICY_SHOW: {OWNER, SCIENTIST, OBSERVER, ADMIN},
    A.DATASET_LIST: {OWNER, SCIENTIST, OBSERVER, ADMIN},
    A.MEMBER_ADD: {OWNER, ADMIN},
    A.MEMBER_REMOVE: {OWNER, ADMIN},
    A.DATASET_IMPORT: {OWNER, ADMIN},
    A.DATASET_SHARE: {OWNER, ADMIN},
    A.DATASET_ACCEPT: {OWNER, ADMIN},
    A.DATASET_REVOKE: {OWNER, ADMIN},
    A.RELEASE_REVIEW: {OWNER},
    A.SESSION_START: {OWNER, SCIENTIST, OBSERVER},
    A.SESSION_LIST: {OWNER, SCIENTIST, OBSERVER, ADMIN},
    A.SESSION_STOP: {OWNER, ADMIN},
    A.PROJECT_AUDIT_READ: {OWNER, ADMIN},
    A.WORKSPACE_WRITE: {OWNER, SCIENTIST},
    A.RELEASE_REQUEST: {OWNER, SCIENTIST},
    A.FILE_DOWNLOAD: set(),
    A.FILE_UPLOAD: {OWNER},
    A.FILE_READ_TEXT: {OWNER},
    A.TERMINAL_OPEN: set(),
    A.RUN_SUBMIT: {OWNER, SCIENTIST},
    A.RUN_READ: {OWNER, SCIENTIST, OBSERVER, ADMIN},
    A.RUN_CANCEL: {OWNER, ADMIN},
}
PERMISSIVE_TABLE = {
    **STRICT_TABLE,
    A.FILE_DOWNLOAD: {OWNER, SCIENTIST},
    A.FILE_UPLOAD: {OWNER, SCIENTIST, OBSERVER},
    A.FILE_READ_TEXT: {OWNER, SCIENTIST},  # the roles that may download
    A.TERMINAL_OPEN: {OWNER, SCIENTIST},
}


def test_the_table_covers_every_action():
    assert set(STRICT_TABLE) == set(Action)


def ask(who: str, action: Action, policy: Policy):
    if who == ADMIN:
        return decide(Subject("root", is_admin=True), action, None, policy)
    role = None if who == OUTSIDER else Role(who)
    return decide(Subject("someone"), action, role, policy)


@pytest.mark.parametrize("policy_name", ["strict", "permissive"])
@pytest.mark.parametrize("who", EVERYONE)
@pytest.mark.parametrize("action", list(Action), ids=lambda a: a.value)
def test_role_by_action(action, who, policy_name):
    policy, table = (STRICT, STRICT_TABLE) if policy_name == "strict" else (PERMISSIVE, PERMISSIVE_TABLE)
    decision = ask(who, action, policy)
    assert decision.allowed is (who in table[action]), decision.reason
    assert decision.reason


def test_unknown_actions_are_refused():
    class Other(str):
        value = "project.delete"

    assert not decide(Subject("root", is_admin=True), Other("x"), Role.DATA_OWNER)


def test_refusal_says_who_and_why():
    decision = ask(OUTSIDER, A.DATASET_LIST, STRICT)
    assert decision.reason == "someone is not a member of this project"
    decision = ask(SCIENTIST, A.DATASET_SHARE, STRICT)
    assert "only a data owner" in decision.reason and "data_scientist" in decision.reason


@pytest.mark.parametrize(
    ("setting", "allowed"),
    [
        ("text_content_roles=none", set()),
        ("text_content_roles=data_scientist", {SCIENTIST}),
        ("text_content_roles=data_owner,data_scientist,observer", {OWNER, SCIENTIST, OBSERVER}),
    ],
)
def test_text_reads_follow_text_content_roles(setting, allowed):
    """Hub admins get no data rights: text reads are for members the policy names (or who may download)."""
    policy = Policy().with_settings([setting])
    for who in EVERYONE:
        assert ask(who, A.FILE_READ_TEXT, policy).allowed is (who in allowed), who


def test_no_headless_runs_where_the_policy_allows_none():
    closed = Policy().with_settings(["max_concurrent_runs=0"])
    decision = decide(Subject("bob"), A.RUN_SUBMIT, Role.DATA_SCIENTIST, closed)
    assert not decision and "max_concurrent_runs=0" in decision.reason
    assert decide(Subject("bob"), A.RUN_SUBMIT, Role.DATA_SCIENTIST, Policy())
