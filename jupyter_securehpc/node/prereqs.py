"""What a compute node needs before the launcher may touch a key, and how to fix what is missing.

Every check returns ``None`` when the node is fine, or a :class:`Problem` naming what is wrong and the
command an admin runs to fix it. The launcher refuses to start (before any key is unwrapped) while a
problem remains; ``securehpc-node check`` and ``securehpc dev status`` print the same findings.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

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
