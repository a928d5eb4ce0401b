"""Staging: copy a small dataset's plaintext into the sandbox's private memory once, at start.

Reads through FUSE cost a round trip to gocryptfs per request and per open; for many small files that
dominates (benchmarks/sandbox_read.py). A dataset that fits the budget is decrypted once, in parallel,
into a tmpfs that exists only in the sandbox's mount namespace, then made read-only; the FUSE mount is
dropped. The plaintext is in RAM (counted against the job's memory), never on disk, and vanishes with
the sandbox like the mount would.
"""

from __future__ import annotations

import ctypes
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT = 1, 2, 4, 32
MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def mount_tmpfs(target: Path, size_bytes: int) -> None:
    options = f"size={size_bytes},mode=0755".encode()
    _check(_libc.mount(b"tmpfs", str(target).encode(), b"tmpfs", MS_NOSUID | MS_NODEV, options), f"tmpfs on {target}")


def remount_read_only(target: Path) -> None:
    flags = MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV
    _check(_libc.mount(None, str(target).encode(), None, flags, None), f"read-only remount of {target}")


def detach(target: Path) -> None:
    _check(_libc.umount2(str(target).encode(), MNT_DETACH), f"unmount of {target}")


def copy_tree(source: Path, target: Path, workers: int = 8) -> int:
    """Copy every folder and regular file (in parallel: gocryptfs decrypts requests concurrently)."""
    files = []
    for folder, dirnames, filenames in os.walk(source):
        relative = Path(folder).relative_to(source)
        for name in dirnames:
            (target / relative / name).mkdir()
        files += [relative / name for name in filenames]
    with ThreadPoolExecutor(workers) as pool:
        sizes = list(pool.map(lambda rel: _copy_file(source / rel, target / rel), files))
    return sum(sizes)


def _copy_file(source: Path, target: Path) -> int:
    shutil.copyfile(source, target)
    return target.stat().st_size


def stage(plain_mount: Path, target: Path, size_bytes: int) -> None:
    """Replace a mounted dataset by a read-only in-memory copy at ``target``."""
    # Room for the files plus tmpfs' own bookkeeping; the copy fails cleanly (ENOSPC) if the estimate is off.
    mount_tmpfs(target, int(size_bytes * 1.05) + (64 << 20))
    copy_tree(plain_mount, target)
    remount_read_only(target)
    detach(plain_mount)
