"""The node checks name what is missing and the command that fixes it."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from jupyter_securehpc.node import prereqs


def char_device(path: Path, mode: int) -> Path:
    os.mknod(path, mode | stat.S_IFCHR, os.makedev(1, 3))
    path.chmod(mode)
    return path


def test_fuse_device_must_be_usable_by_everyone(tmp_path):
    problem = prereqs.check_fuse(char_device(tmp_path / "fuse", 0o600))
    assert problem is not None
    assert "mode 0600" in problem.what
    assert f"chmod 0666 {tmp_path / 'fuse'}" in problem.fix
    assert prereqs.check_fuse(char_device(tmp_path / "fuse2", 0o666)) is None


def test_missing_or_wrong_fuse_device(tmp_path):
    assert "does not exist" in prereqs.check_fuse(tmp_path / "nothing").what
    (tmp_path / "plain").write_text("")
    assert "not a character device" in prereqs.check_fuse(tmp_path / "plain").what


def test_missing_tool_names_the_package():
    problem = prereqs.check_tool("securehpc-no-such-tool", "some-package")
    assert problem.fix == "apt-get install some-package"


def test_this_machine_is_ready(local_cluster):
    # local_cluster prepared the host (/dev/fuse 0666) as a compute node would be.
    assert prereqs.node_problems() == []
    result = subprocess.run(
        [str(Path(sys.executable).with_name("securehpc-node")), "check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "node ready" in result.stdout


def test_unprivileged_user_namespace_trial_runs_as_that_user(unix_user):
    assert prereqs.check_user_namespaces(unix_user.name) is None


SWAPS_HEADER = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"


def test_no_swap_is_fine(tmp_path):
    swaps = tmp_path / "swaps"
    swaps.write_text(SWAPS_HEADER)
    assert prereqs.unencrypted_swap(swaps) == []
    assert prereqs.check_swap(swaps) is None


def test_this_node_has_no_swap_or_reports_it():
    """On this machine: the real /proc/swaps, read the way the launcher reads it."""
    devices = prereqs.unencrypted_swap()
    problem = prereqs.check_swap()
    assert (problem is None) == (devices == [])


def test_swap_on_a_disk_is_a_problem_with_its_fix(tmp_path):
    """Decrypted data in a session's memory could be paged out to a disk in plain text."""
    swaps = tmp_path / "swaps"
    swaps.write_text(
        SWAPS_HEADER + "/swapfile                               file\t\t1048572\t\t0\t\t-2\n"
        "/dev/zram0                              partition\t4194300\t\t0\t\t100\n"
    )
    assert prereqs.unencrypted_swap(swaps) == ["/swapfile"]  # zram lives in memory
    problem = prereqs.check_swap(swaps)
    assert problem is not None and "/swapfile" in problem.what
    assert "swapoff -a" in problem.fix and "encrypted swap" in problem.fix
