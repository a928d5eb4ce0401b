"""Real jobs on the local Slurm: GPU requests are scheduled through GRES counts.

This machine has no GPU. The node's GRES are placeholder devices, so these tests show that Slurm
schedules and accounts GPUs and sets ``CUDA_VISIBLE_DEVICES``; no code here ran on a real GPU.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

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


@pytest.mark.parametrize(("umask", "slurm_umask", "mode"), [(0o022, "0077", 0o600), (0o077, None, 0o600)])
def test_slurm_creates_the_job_output_with_the_submitters_umask_setting(slurm_env, unix_user, umask, slurm_umask, mode):
    """What the spawner relies on, either way: SLURM_UMASK in sbatch's environment, and sbatch's own umask."""
    folder = Path(tempfile.mkdtemp(prefix="securehpc-umask-"))
    folder.chmod(0o755)
    os.chown(folder, unix_user.uid, unix_user.gid)
    env = {key: value for key, value in slurm_env.items() if key != "SLURM_UMASK"}
    if slurm_umask:
        env["SLURM_UMASK"] = slurm_umask
    try:
        subprocess.run(["sbatch", "--wait", f"--uid={unix_user.uid}", f"--gid={unix_user.gid}", "--time=1",
                        f"--output={folder}/out-%j.log", "--wrap=echo done"],
                       env=env, umask=umask, capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
        (output,) = folder.glob("out-*.log")
        assert output.read_text() == "done\n" and output.stat().st_mode & 0o777 == mode
    finally:
        shutil.rmtree(folder, ignore_errors=True)
