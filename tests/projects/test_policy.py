"""Policy settings: parsed from KEY=VALUE, unknown keys and bad values refused, all or nothing."""

from __future__ import annotations

import pytest

from jupyter_securehpc.projects.policy import InvalidPolicy, Policy
from jupyter_securehpc.projects.roles import Role


def test_defaults_deny_what_is_risky():
    policy = Policy()
    assert policy.download_roles == frozenset()
    assert policy.terminals is False
    assert policy.exclusive is True
    # Reading data files whole as text is a download by other means: data owners only by default.
    assert policy.text_content_roles == frozenset({Role.DATA_OWNER})


@pytest.mark.parametrize(
    ("setting", "field", "value"),
    [
        ("max_gpus=2", "max_gpus", 2),
        ("max_gpus=0", "max_gpus", 0),
        ("partition=gpu-secure", "partition", "gpu-secure"),
        ("max_wall_time=90", "max_wall_time", 90),
        ("max_wall_time=8h", "max_wall_time", 480),
        ("max_wall_time=2d", "max_wall_time", 2880),
        ("terminals=true", "terminals", True),
        ("exclusive=off", "exclusive", False),
        ("download_roles=data_owner", "download_roles", frozenset({Role.DATA_OWNER})),
        ("upload_roles=data_owner,data_scientist", "upload_roles", frozenset({Role.DATA_OWNER, Role.DATA_SCIENTIST})),
        ("upload_roles=none", "upload_roles", frozenset()),
        ("text_content_roles=none", "text_content_roles", frozenset()),
        ("text_content_roles=data_scientist", "text_content_roles", frozenset({Role.DATA_SCIENTIST})),
        ("text_content_roles=data_owner, observer", "text_content_roles", frozenset({Role.DATA_OWNER, Role.OBSERVER})),
        ("key_ttl=600", "key_ttl", 600),
        ("release_reviewers=2", "release_reviewers", 2),
    ],
)
def test_settings_parse(setting, field, value):
    assert getattr(Policy().with_settings([setting]), field) == value


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("max_gpu=2", "unknown policy key 'max_gpu'"),
        ("max_gpus", "is not KEY=VALUE"),
        ("max_gpus=-1", "bad value '-1' for max_gpus"),
        ("max_gpus=two", "bad value 'two' for max_gpus"),
        ("max_gpus=65", "from 0 to 64"),
        ("max_gpus=1.5", "whole number"),
        ("terminals=maybe", "true or false"),
        ("download_roles=admin", "unknown role 'admin'"),
        ("text_content_roles=everyone", "unknown role 'everyone'"),
        ("max_wall_time=0", "1 minute to 30 days"),
        ("max_wall_time=31d", "1 minute to 30 days"),
        ("partition=gpu;rm -rf /", "partition name"),
        ("partition=", "partition name"),
        ("key_ttl=5", "from 30 to 86400"),
        ("release_reviewers=0", "from 1 to 10"),
    ],
)
def test_bad_settings_are_refused(setting, message):
    with pytest.raises(InvalidPolicy) as error:
        Policy().with_settings([setting])
    assert message in str(error.value)


def test_one_bad_setting_changes_nothing():
    policy = Policy()
    with pytest.raises(InvalidPolicy):
        policy.with_settings(["max_gpus=2", "terminals=maybe"])
    assert policy == Policy()


def test_round_trip_through_the_database_form():
    policy = Policy().with_settings(["download_roles=data_owner", "max_gpus=2", "text_content_roles=none"])
    assert Policy.from_dict(policy.as_dict()) == policy
