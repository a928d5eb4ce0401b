"""Real jobs on the local Slurm: GPU requests are scheduled through GRES counts.

This machine has no GPU. The node's GRES are placeholder devices, so these tests show that Slurm
schedules and accounts GPUs and sets ``CUDA_VISIBLE_DEVICES``; no code here ran on a real GPU.
"""

from __future__ import annotations

import subprocess

import pytest

pytestmark = pytest.mark.slurm

JOB_SCRIPT = """#!/bin/sh
echo "user=$(id -un)"
echo "gpus=${CUDA_VISIBLE_DEVICES-none}"
echo "partition=$SLURM_JOB_PARTITION"
"""


def submit(slurm_env, unix_user, user_dir, *options: str) -> tuple[subprocess.CompletedProcess, dict]:
    """``sbatch --wait`` the job script as the test user; return sbatch's result and the job's output."""
    out = user_dir / "job.out"
    result = subprocess.run(
        [
            "sbatch",
            "--wait",
            "--parsable",
            f"--uid={unix_user.name}",
            f"--gid={unix_user.gid}",
            f"--chdir={user_dir}",
            f"--output={out}",
            "--time=2",
            *options,
        ],
        input=JOB_SCRIPT,
        capture_output=True,
        text=True,
        env=slurm_env,
        timeout=120,
        check=False,
    )
    fields = {}
    if out.exists():
        fields = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
    return result, fields


def job_info(slurm_env, job_id: str) -> str:
    return subprocess.run(
        ["scontrol", "show", "job", job_id], capture_output=True, text=True, env=slurm_env, timeout=15, check=True
    ).stdout


def test_gpu_job_runs_as_the_user_with_one_gpu(slurm_env, unix_user, user_dir):
    result, output = submit(slurm_env, unix_user, user_dir, "--partition=gpu", "--gres=gpu:1")
    assert result.returncode == 0, result.stderr
    assert output == {"user": unix_user.name, "gpus": "0", "partition": "gpu"}
    info = job_info(slurm_env, result.stdout.strip().split(";")[0])
    assert "JobState=COMPLETED" in info
    assert "TresPerNode=gres:gpu:1" in info


def test_two_gpus_are_two_devices(slurm_env, unix_user, user_dir):
    result, output = submit(slurm_env, unix_user, user_dir, "--partition=gpu", "--gres=gpu:2")
    assert result.returncode == 0, result.stderr
    assert output["gpus"] == "0,1"


def test_more_gpus_than_the_node_has_are_refused(slurm_env, unix_user, user_dir):
    result, output = submit(slurm_env, unix_user, user_dir, "--partition=gpu", "--gres=gpu:3")
    assert result.returncode != 0
    assert "Requested node configuration is not available" in result.stderr
    assert output == {}


def test_cpu_partition_job_gets_no_gpu(slurm_env, unix_user, user_dir):
    result, output = submit(slurm_env, unix_user, user_dir, "--partition=cpu")
    assert result.returncode == 0, result.stderr
    assert output == {"user": unix_user.name, "gpus": "none", "partition": "cpu"}
