"""What a compute node needs before the launcher may touch a key, and how to fix what is missing.

Every check returns ``None`` when the node is fine, or a :class:`Problem` naming what is wrong and the
command an admin runs to fix it. The launcher refuses to start (before any key is unwrapped) while a
problem remains; ``securehpc-node check`` and ``securehpc dev status`` print the same findings.

- ``node_problems``: tools, FUSE, user namespaces, swap;
- ``store_problems``: the store root, ``projects/`` and each project folder are root's and closed to writes,
  each workspace is its project group's alone (2770), so that no principal or person can put another folder
  in a project's place;
- ``node_advice`` (printed, never blocking): what narrows what the node's other users see, ``hidepid`` on
  ``/proc``, ``pam_slurm_adopt`` where people may SSH in, a private ``/tmp`` per job.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..vocabulary import StoreLayout

FUSE_DEVICE = Path("/dev/fuse")


@dataclass(frozen=True)
class Problem:
    what: str
    fix: str

    def __str__(self) -> str:
        return f"{self.what}\n  fix: {self.fix}"


def check_tool(name: str, package: str) -> Problem | None:
    if shutil.which(name) is None:
        return Problem(f"`{name}` is not installed", f"apt-get install {package}")
    return None


def check_fuse(device: Path = FUSE_DEVICE) -> Problem | None:
    """gocryptfs mounts from inside a user namespace, where setuid fusermount does not work: the job's
    user needs read and write access to the FUSE device itself."""
    try:
        mode = device.stat().st_mode
    except FileNotFoundError:
        return Problem(f"{device} does not exist (FUSE is not available)", "modprobe fuse")
    if not stat.S_ISCHR(mode):
        return Problem(f"{device} is not a character device", "modprobe fuse, then check /dev")
    if stat.S_IMODE(mode) & 0o666 != 0o666:
        return Problem(
            f"{device} has mode {stat.S_IMODE(mode):04o}; job users cannot open it",
            f'chmod 0666 {device} (make it permanent with a udev rule: KERNEL=="fuse", MODE="0666")',
        )
    return None


def _sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys", *name.split(".")).read_text().strip()
    except OSError:
        return None


def check_user_namespaces(user: str = "nobody") -> Problem | None:
    """Try it: an unprivileged user starts a bubblewrap sandbox with every namespace unshared."""
    if _sysctl("user.max_user_namespaces") == "0":
        return Problem(
            "user namespaces are disabled (user.max_user_namespaces = 0)",
            "sysctl -w user.max_user_namespaces=15000 (and persist it in /etc/sysctl.d/)",
        )
    if _sysctl("kernel.unprivileged_userns_clone") == "0":
        return Problem(
            "unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone = 0)",
            "sysctl -w kernel.unprivileged_userns_clone=1 (and persist it in /etc/sysctl.d/)",
        )
    if _sysctl("kernel.apparmor_restrict_unprivileged_userns") == "1":
        return Problem(
            "AppArmor forbids unprivileged user namespaces",
            "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or an AppArmor profile for bwrap",
        )
    if shutil.which("bwrap") is None:
        return check_tool("bwrap", "bubblewrap")
    from .sandbox import probe_argv  # here: sandbox.py asks this module about swap when it plans the mounts

    argv = probe_argv()
    # As root, run the trial as an unprivileged user: root can always create namespaces.
    as_user = {}
    if os.geteuid() == 0:
        entry = pwd.getpwnam(user)
        as_user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False, **as_user)
    except subprocess.TimeoutExpired:
        return Problem("bubblewrap did not finish a trivial sandbox in 20 s", "check `bwrap --version`")
    if result.returncode != 0:
        return Problem(
            f"an unprivileged user cannot create a sandbox: {result.stderr.strip()}",
            "enable unprivileged user namespaces (see the README's node prerequisites)",
        )
    return None


SWAPS = Path("/proc/swaps")


def unencrypted_swap(swaps: Path = SWAPS) -> list[str]:
    """The node's active swap areas that could hold plaintext on a disk: all but zram (memory) and dm-crypt
    devices (encrypted with a key that dies with the node)."""
    try:
        lines = swaps.read_text().splitlines()[1:]
    except OSError:
        return []
    found = []
    for line in lines:
        device = line.split()[0] if line.split() else ""
        if not device:
            continue
        name = os.path.basename(os.path.realpath(device))
        if name.startswith("zram"):
            continue
        uuid = Path("/sys/block", name, "dm", "uuid")
        try:
            if uuid.read_text().startswith("CRYPT-"):
                continue
        except OSError:
            pass
        found.append(device)
    return found


def check_swap(swaps: Path = SWAPS) -> Problem | None:
    """Decrypted project data lives in the sessions' memory: swap on a disk would write it there in plain."""
    devices = unencrypted_swap(swaps)
    if not devices:
        return None
    return Problem(
        f"this node swaps to {', '.join(devices)}: decrypted project data in a session's memory could be "
        "written to disk unencrypted",
        "swapoff -a and remove the swap from /etc/fstab, or use encrypted swap (dm-crypt with a random key) or zram",
    )


def node_problems() -> list[Problem]:
    """Everything that stops the launcher on this node, in the order an admin should fix it."""
    checks = [
        check_tool("bwrap", "bubblewrap"),
        check_tool("gocryptfs", "gocryptfs"),
        check_tool("fusermount3", "fuse3"),
        check_fuse(),
        check_user_namespaces(),
        check_swap(),
    ]
    return [problem for problem in checks if problem is not None]


# --- the store root: only root may change what a project's folders are -------------------------------------

WORKSPACE_MODE = 0o2770


def _owned_by_root_and_closed(path: Path, what: str) -> Problem | None:
    try:
        info = path.lstat()
    except FileNotFoundError:
        return Problem(f"{what} {path} does not exist", "mount the shared storage at the same path as on the hub")
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        return Problem(f"{what} {path} is not a folder (a link?)", f"make {path} a folder of root's")
    if info.st_uid != 0 or info.st_mode & 0o022:
        return Problem(
            f"{what} {path} is owned by uid {info.st_uid} with mode {stat.S_IMODE(info.st_mode):04o}: whoever may "
            "write it could put another folder in a project's place",
            f"chown root {path} && chmod go-w {path}",
        )
    return None


def check_workspace(workspace: Path) -> Problem | None:
    """A project's workspace: root's, its project's group's (2770, no other access), its config read-only."""
    try:
        info = workspace.lstat()
    except FileNotFoundError:
        return None  # reported as a missing store by the launcher, with the session's context
    fix = "securehpc account sync (on the hub host: gives each workspace to its project's group)"
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0 or info.st_gid == 0:
        return Problem(f"workspace {workspace} is not a folder owned by root and a project group", fix)
    if stat.S_IMODE(info.st_mode) != WORKSPACE_MODE:
        return Problem(
            f"workspace {workspace} has mode {stat.S_IMODE(info.st_mode):04o}, not {WORKSPACE_MODE:04o} (the "
            "project's principals read and write it together, setgid; nobody else may list it)",
            fix,
        )
    try:
        group = grp.getgrgid(info.st_gid)
    except KeyError:
        return Problem(
            f"workspace {workspace} belongs to group id {info.st_gid}, which this node does not know: its project's "
            "principals cannot run here",
            "make the project accounts (principals and groups) exist on every secure node, with the hub host's ids "
            "(the site's directory; `securehpc account list` on the hub host)",
        )
    if group.gr_mem:
        return Problem(
            f"the group {group.gr_name} of workspace {workspace} has supplementary members "
            f"({', '.join(sorted(group.gr_mem))}): their own accounts could change the workspace's ciphertext",
            f"gpasswd -d USER {group.gr_name} (a project group holds principals only, as their primary group)",
        )
    try:
        config = (workspace / "gocryptfs.conf").lstat()
    except OSError:
        return None
    if config.st_mode & 0o222 or config.st_uid != 0:
        return Problem(f"{workspace}/gocryptfs.conf is writable or not root's: a member could replace it", fix)
    return None


def store_problems(store_root: Path, project: str | None = None) -> list[Problem]:
    """The store root, ``projects/`` and each project's folder are root's and closed to writes; each workspace
    is its project's group's (``project``: that project only, as a session checks it)."""
    problems = [_owned_by_root_and_closed(store_root, "store root")]
    projects = StoreLayout(store_root).projects_dir()
    if problems[0] is None and projects.exists():
        problems.append(_owned_by_root_and_closed(projects, "projects folder"))
        names = [project] if project is not None else sorted(p.name for p in projects.iterdir())
        for name in names:
            folder = projects / name
            if folder.exists():
                problems.append(_owned_by_root_and_closed(folder, "project folder"))
                problems.append(check_workspace(StoreLayout.workspace_in(folder)))
    return [problem for problem in problems if problem is not None]


# --- advice: settings that narrow what the node's other users see (they do not stop a session) --------------


def check_hidepid(mounts: Path = Path("/proc/mounts")) -> Problem | None:
    try:
        lines = mounts.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) > 3 and fields[1] == "/proc" and fields[2] == "proc":
            options = fields[3].split(",")
            if any(option in ("hidepid=2", "hidepid=invisible") for option in options):
                return None
    return Problem(
        "every user of this node sees the sessions' processes and their command lines (no secret is in them; "
        "the principals' processes are out of their reach)",
        "mount -o remount,hidepid=invisible /proc (and in /etc/fstab: proc /proc proc defaults,hidepid=invisible 0 0)",
    )


def check_ssh_adopt(pam_sshd: Path = Path("/etc/pam.d/sshd")) -> Problem | None:
    """Where people may SSH to the node, pam_slurm_adopt lets in only those with a job here: a person never has
    one on a node that runs principals' sessions."""
    try:
        text = pam_sshd.read_text()
    except OSError:
        return None  # no SSH server
    if "pam_slurm_adopt" in text:
        return None
    return Problem(
        f"people may SSH to this node ({pam_sshd} has no pam_slurm_adopt)",
        f"add 'account required pam_slurm_adopt.so' to {pam_sshd} and PrologFlags=Contain to slurm.conf",
    )


def check_job_tmp(slurm_config: str | None) -> Problem | None:
    if slurm_config is None or "job_container/tmpfs" in slurm_config:
        return None
    return Problem(
        "jobs share the node's /tmp: what a killed launcher leaves there (its private folder, 0700) outlives the job",
        "JobContainerType=job_container/tmpfs in slurm.conf, with a job_container.conf (Slurm's documentation)",
    )


def slurm_config() -> str | None:
    """``scontrol show config`` of this node's Slurm, or None without one."""
    if shutil.which("scontrol") is None:
        return None
    try:
        result = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return None
    return result.stdout if result.returncode == 0 else None


def node_advice() -> list[Problem]:
    """What narrows what other users of the node see, in the order an admin should consider it; not required."""
    checks = [check_hidepid(), check_ssh_adopt(), check_job_tmp(slurm_config())]
    return [problem for problem in checks if problem is not None]
