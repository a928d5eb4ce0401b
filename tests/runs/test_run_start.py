"""A run's start, pure logic: what a run's batch script holds (no spec, no key, nothing of the run), the hub's
answer to the job's start as the launcher parses it, and the launcher's refusals before it asks anything.

The start itself (the hub's checks, the key at job start, a second start refused) is tested against the real hub,
Slurm and OpenBao in test_runs_e2e.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jupyter_securehpc.projects.policy import Policy
from jupyter_securehpc.session import reports
from jupyter_securehpc.spawner.options import SessionRequest
from jupyter_securehpc.spawner.script import JobSettings, render

NODE = str(Path(sys.executable).with_name("securehpc-node"))


def run_script(run_id: str = "0123456789ab") -> str:
    return render(SessionRequest("sleep", gpus=0, cpus=1, memory_gb=2, minutes=20), Policy(partition="gpu"),
                  tag=f"securehpc-run:{run_id}", settings=JobSettings(), mode="run", run_id=run_id)  # fmt: skip


def test_a_runs_script_holds_its_tag_and_resources_and_asks_the_hub_for_the_rest():
    script = run_script()
    body = [line for line in script.splitlines() if not line.startswith("#")]
    assert body == ["set -euo pipefail", "exec securehpc-node run --from-hub 0123456789ab"]
    assert "#SBATCH --comment=securehpc-run:0123456789ab" in script
    assert "#SBATCH --time=20" in script and "#SBATCH --partition=gpu" in script
    assert "spec" not in script.replace("securehpc-", "") and "SECUREHPC_" not in script


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"signed_spec": '{"spec": {}, "signature": "x"}'}, "a run's never does"),
        ({"run_id": "../x"}, "needs its run id"),
        ({"run_id": None}, "needs its run id"),
    ],
)
def test_a_runs_script_takes_no_spec_and_needs_a_plain_run_id(changes, says):
    arguments = {"tag": "t", "settings": JobSettings(), "mode": "run", "run_id": "0123456789ab", **changes}
    with pytest.raises(ValueError, match=says):
        render(SessionRequest("sleep", 0, 1, 2, 20), Policy(), **arguments)


def test_a_sessions_script_still_needs_its_spec():
    with pytest.raises(ValueError, match="carries its signed spec"):
        render(SessionRequest("sleep", 0, 1, 2, 20), Policy(), tag="t", settings=JobSettings())


def test_the_start_answer_is_parsed_strictly():
    answer = reports.run_start_answer('{"spec": {}, "signature": "x"}', "hvs.CAESIabc-_.+/=")
    assert reports.parse_run_start_answer(json.dumps(answer).encode()) == (
        answer["signed_spec"],
        answer["wrapped_token"],
    )
    for bad, says in [
        ({**answer, "extra": 1}, "exactly"),
        ({"signed_spec": "", "wrapped_token": "t"}, "signed_spec"),
        ({"signed_spec": "x", "wrapped_token": "a b"}, "wrapping token"),
        ({"signed_spec": "x", "wrapped_token": "t" * 513}, "wrapping token"),
        ({"signed_spec": ["x"], "wrapped_token": "t"}, "signed_spec"),
    ]:
        with pytest.raises(reports.ReportError, match=says):
            reports.parse_run_start_answer(json.dumps(bad).encode())
    with pytest.raises(reports.ReportError, match="longer than"):
        reports.parse_run_start_answer(b" " * (reports.MAX_RUN_START_ANSWER + 1))


def node_run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8"}
    return subprocess.run([NODE, "run", *args], env={**base, **(env or {})}, capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["--from-hub", "0123456789ab"], {}, "--from-hub needs $SECUREHPC_REPORT_URL (ending in /runs/0123456789ab)"),
        (
            ["--from-hub", "0123456789ab"],
            {"SECUREHPC_REPORT_URL": "http://127.0.0.1:9/hub/api/securehpc/runs/other", "SECUREHPC_REPORT_TOKEN": "x"},
            "ending in /runs/0123456789ab",
        ),
        (["--from-hub", "Bad/Id"], {}, "is not a run id"),
    ],
)
def test_the_launcher_refuses_to_ask_for_another_run_or_without_its_hub(args, env, says):
    result = node_run(*args, env=env)
    assert result.returncode == 64, result.stderr + result.stdout
    assert says in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_from_hub_and_a_spec_file_are_one_or_the_other():
    result = node_run("--from-hub", "0123456789ab", "--spec", "/dev/null")
    assert result.returncode == 2 and "not allowed with argument" in result.stderr
    result = node_run("--from-hub", "0123456789ab", "--token-stdin")
    assert result.returncode == 2 and "--token-stdin goes with --spec only" in result.stderr
