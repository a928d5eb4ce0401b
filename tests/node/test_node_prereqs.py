"""The node checks name what is missing and the command that fixes it."""

from __future__ import annotations

import grp
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


def store_root_of(tmp_path: Path, group: int) -> Path:
    """A store root as ``securehpc project create`` leaves it: root's folders, a workspace of its project's group."""
    root = tmp_path / "stores"
    workspace = root / "projects" / "sleep" / "workspace"
    workspace.mkdir(parents=True)
    for folder in (root, root / "projects", root / "projects" / "sleep"):
        folder.chmod(0o755)
    os.chown(workspace, 0, group)
    workspace.chmod(0o2770)
    (workspace / "gocryptfs.conf").write_text("{}")
    os.chown(workspace / "gocryptfs.conf", 0, group)
    (workspace / "gocryptfs.conf").chmod(0o440)
    return root


def test_the_store_root_and_workspaces_must_be_as_account_sync_leaves_them(tmp_path, unix_user):
    root = store_root_of(tmp_path, unix_user.gid)
    workspace = root / "projects" / "sleep" / "workspace"
    assert prereqs.store_problems(root) == [] and prereqs.store_problems(root, "sleep") == []
    # A projects folder a principal or person could write: they could put another folder in a project's place.
    os.chown(root / "projects", unix_user.uid, 0)
    [problem] = prereqs.store_problems(root, "sleep")
    assert "projects folder" in problem.what and f"chown root {root / 'projects'}" in problem.fix
    os.chown(root / "projects", 0, 0)
    (root / "projects" / "sleep").chmod(0o775)
    assert "could put another folder" in prereqs.store_problems(root)[0].what
    (root / "projects" / "sleep").chmod(0o755)
    # A workspace open to others, without setgid, or of root's group; a config a member could replace.
    for mode in (0o2775, 0o0770, 0o2750):
        workspace.chmod(mode)
        [problem] = prereqs.store_problems(root)
        assert f"mode {mode:04o}, not 2770" in problem.what and "securehpc account sync" in problem.fix
    workspace.chmod(0o2770)
    os.chown(workspace, 0, 0)
    assert "owned by root and a project group" in prereqs.store_problems(root)[0].what
    os.chown(workspace, 0, unix_user.gid)
    (workspace / "gocryptfs.conf").chmod(0o660)
    assert "gocryptfs.conf is writable" in prereqs.store_problems(root)[0].what
    assert "does not exist" in prereqs.store_problems(tmp_path / "nowhere")[0].what
    # A group this node does not know: its principals cannot run here.
    os.chown(workspace, 0, 64999)
    (workspace / "gocryptfs.conf").chmod(0o440)
    [problem] = prereqs.store_problems(root)
    assert "group id 64999, which this node does not know" in problem.what and "every secure node" in problem.fix


def test_a_project_group_with_a_persons_account_in_it_is_named(tmp_path, unix_user):
    group = f"t{os.getpid() % 100000}-check"
    subprocess.run(["groupadd", group], check=True)
    try:
        subprocess.run(["gpasswd", "-a", unix_user.name, group], check=True, capture_output=True)
        root = store_root_of(tmp_path, grp.getgrnam(group).gr_gid)
        [problem] = prereqs.store_problems(root, "sleep")
        assert f"({unix_user.name})" in problem.what and f"gpasswd -d USER {group}" in problem.fix
    finally:
        subprocess.run(["groupdel", group], check=False)


def test_the_check_command_names_store_problems_and_gives_advice(tmp_path, unix_user, local_cluster):
    root = store_root_of(tmp_path, unix_user.gid)
    (root / "projects" / "sleep" / "workspace").chmod(0o2777)
    node = str(Path(sys.executable).with_name("securehpc-node"))
    result = subprocess.run([node, "check", "--store-root", str(root)], capture_output=True, text=True, timeout=60,
                            check=False, env={**os.environ, **local_cluster.layout.client_env()})  # fmt: skip
    assert result.returncode == 1 and "NOT READY: workspace" in result.stderr and "mode 2777" in result.stderr
    # Advice is printed and does not make the node unready: this machine's /proc has no hidepid, its Slurm no
    # private /tmp per job.
    assert "ADVICE: every user of this node sees the sessions' processes" in result.stdout
    assert "ADVICE: jobs share the node's /tmp" in result.stdout and "job_container/tmpfs" in result.stdout


def test_advice_on_hidepid_and_ssh(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text("proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0\n")
    assert "hidepid=invisible" in prereqs.check_hidepid(mounts).fix
    mounts.write_text("proc /proc proc rw,nosuid,nodev,noexec,relatime,hidepid=invisible 0 0\n")
    assert prereqs.check_hidepid(mounts) is None
    sshd = tmp_path / "sshd"
    assert prereqs.check_ssh_adopt(sshd) is None  # no SSH server
    sshd.write_text("@include common-account\n")
    assert "pam_slurm_adopt" in prereqs.check_ssh_adopt(sshd).fix
    sshd.write_text("account required pam_slurm_adopt.so\n")
    assert prereqs.check_ssh_adopt(sshd) is None
    assert prereqs.check_job_tmp("JobContainerType = job_container/tmpfs\n") is None
    assert prereqs.check_job_tmp(None) is None
