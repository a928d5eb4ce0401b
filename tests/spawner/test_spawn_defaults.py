"""Spawn options without a value take modest defaults, so that several sessions fit one node; the form shows
them (options.py). Slurm's reasons for a waiting job, in words (pending.py)."""

from __future__ import annotations

import pytest

from jupyter_securehpc.projects.policy import Policy
from jupyter_securehpc.spawner.options import default_request, form, parse
from jupyter_securehpc.spawner.pending import describe

DEMO = Policy().with_settings(["max_cpus=2", "max_memory_gb=4", "max_wall_time=8h", "exclusive=false"])


@pytest.mark.parametrize(
    ("settings", "options", "expected"),
    [
        # The demo's policy: one CPU and its share of the memory, one GPU, the policy's wall time.
        (["max_cpus=2", "max_memory_gb=4"], {}, (1, 1, 2)),
        # The memory follows the CPUs asked for, rounded up, never above the policy's maximum.
        (["max_cpus=3", "max_memory_gb=10"], {"cpus": "2"}, (1, 2, 7)),
        (["max_cpus=3", "max_memory_gb=10"], {"cpus": "3"}, (1, 3, 10)),
        # Less memory than CPUs: at least 1 GB.
        (["max_cpus=8", "max_memory_gb=1"], {}, (1, 1, 1)),
        # What is asked for is kept.
        (["max_cpus=8", "max_memory_gb=32"], {"cpus": "4", "memory_gb": "5", "gpus": "0"}, (0, 4, 5)),
        # A policy without GPUs asks for none.
        (["max_gpus=0", "partition=cpu"], {}, (0, 1, 4)),
    ],
)
def test_defaults_are_one_cpu_and_its_memory_share(settings, options, expected):
    policy = Policy().with_settings(settings)
    request = parse({"project": "sleep", **options}, {"sleep": policy})
    assert (request.gpus, request.cpus, request.memory_gb) == expected
    assert request.minutes == policy.max_wall_time


def test_two_default_sessions_fit_the_demo_node():
    """The demo's node has as many CPUs as this machine (2) and two GPUs; the demo's policy allows 2 CPUs."""
    request = parse({}, {"sleep": DEMO}, default_project="sleep")
    assert request.cpus * 2 <= 2 and request.gpus * 2 <= 2 and request.memory_gb * 2 <= DEMO.max_memory_gb


def test_the_form_starts_at_the_selected_projects_defaults():
    page = form({"sleep": DEMO, "cardio": DEMO}, selected="sleep")
    defaults = default_request("sleep", DEMO)
    assert f'name="cpus" id="cpus" min="1" value="{defaults.cpus}"' in page
    assert f'value="{defaults.memory_gb}"' in page and f'value="{defaults.minutes}"' in page
    assert '<option value="sleep" selected>' in page
    # No project chosen yet (the default server): the fields stay empty and say what an empty field means.
    assert 'value="1" placeholder' not in form({"sleep": DEMO}, selected=None)


@pytest.mark.parametrize(
    ("reason", "says"),
    [
        ("Resources", "waiting: all CPUs, memory or GPUs of the gpu partition that this session asks for are in use"),
        ("Priority", "waiting: jobs with a higher priority are queued before it in the gpu partition"),
        ("QOSMaxCpuPerUserLimit", "waiting: it asks for more than the quality of service allows"),
        ("QOSGrpGRES", "waiting: the quality of service's limit for a whole group of users is reached"),
        ("AssocGrpCpuLimit", "waiting: the limit of its Slurm account (association) is reached"),
        ("ReqNodeNotAvail, UnavailableNodes:securehpc-n1", "waiting: the nodes it needs in the gpu partition"),
        ("PartitionDown", "waiting: the gpu partition is down"),
        ("BeginTime", "waiting: its start time has not come yet"),
        # Unknown codes are shown as Slurm gave them.
        ("SomethingNew", "waiting: Slurm says SomethingNew"),
        ("", "waiting: Slurm says nothing"),
    ],
)
def test_pending_reasons_in_words(reason, says):
    assert describe(reason, "gpu").startswith(says)


def test_a_family_code_keeps_slurms_own_words_for_the_admins():
    assert describe("QOSMaxCpuPerUserLimit", "gpu").endswith("(Slurm: QOSMaxCpuPerUserLimit)")
    assert "\n" not in describe("Resources\nforged line", "gpu")
