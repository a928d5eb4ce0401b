"""Prefetch: read mounted datasets once in the background at start, so the program finds them in memory.

The datasets are mounted with ``-kernel_cache``, so pages read once through FUSE stay in the kernel's page
cache for every later open. A process in the outer sandbox reads the datasets in the order a program
usually does (sorted paths), several chunks at a time, while the program computes (in a served session:
from the moment the Jupyter server listens, so that the spawn is not slowed): a cold analysis pass then
mostly copies from memory instead of waiting for gocryptfs request by request (benchmarks/sandbox_read.py).
Unlike staging, nothing is hidden or copied: the program always sees the complete files through the mount,
pages that are not prefetched yet are read on demand, and the cache is reclaimable memory, not a tmpfs the
job must hold.

It reads at most a budget (half the memory the job may still use, less what is staged), niced (gocryptfs
does the decryption for it and for the program alike), and it dies with the sandbox.
"""

from __future__ import annotations

import os
import select
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from .staging import BUFFER, chunks, run_chunks

CGROUP_ROOT = Path("/sys/fs/cgroup")
AFTER_TIMEOUT = 120.0  # a server that takes longer to listen than this gets its cache warmed anyway


def memory_budget(staged_bytes: int = 0) -> int:
    """Bytes the prefetch may read: half of what the job may still use (cgroup limit or node), less staging."""
    available = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            available = int(line.split()[1]) << 10
    # cgroup v2: the job's own limit (Slurm's task/cgroup) is usually far below the node's memory.
    relative = Path("/proc/self/cgroup").read_text().strip().rsplit(":", 1)[-1].lstrip("/")
    group = CGROUP_ROOT / relative
    while group.is_relative_to(CGROUP_ROOT):
        try:
            limit, used = (group / "memory.max").read_text().strip(), (group / "memory.current").read_text()
        except OSError:
            limit = "max"
        if limit != "max":
            available = min(available, int(limit) - int(used))
        group = group.parent
    return max(0, available // 2 - staged_bytes)


def files_in_order(root: Path) -> Iterator[tuple[Path, int]]:
    """(path, size) of the regular files under ``root`` in sorted path order (``sorted(glob('**'))``)."""
    with os.scandir(root) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.is_dir(follow_symlinks=False):
                yield from files_in_order(Path(entry.path))
            elif entry.is_file(follow_symlinks=False):
                yield Path(entry.path), entry.stat(follow_symlinks=False).st_size


def plan(roots: list[Path], budget: int) -> Iterator[tuple[Path, int, int]]:
    """Chunks of the files under ``roots`` (absolute paths), in reading order, until ``budget`` bytes."""
    for root in roots:
        for path, size in files_in_order(root):
            if size > budget:
                return
            budget -= size
            yield from chunks([(path, size)])


def read_range(path: Path, offset: int, length: int, buffer: bytearray) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        view, end = memoryview(buffer), offset + length
        while offset < end:
            n = os.preadv(fd, [view[: min(BUFFER, end - offset)]], offset)
            if n == 0:
                break
            offset += n
    finally:
        os.close(fd)
    return length


def prefetch(roots: list[Path], budget: int) -> int:
    """Read the datasets' first ``budget`` bytes through their mounts; returns the bytes read."""
    return run_chunks(plan(roots, budget), read_range)


def start_in_background(
    roots: list[Path], budget: int, after_fd: int | None = None, close_fds: Sequence[int] = ()
) -> None:
    """Prefetch in a detached grandchild (the sandbox's init reaps it; it dies with the pid namespace).

    With ``after_fd``, it first waits (up to AFTER_TIMEOUT) until that pipe ends: the launcher closes it
    once the Jupyter server answers, so that a session's start is not slowed by gocryptfs decrypting for the
    prefetch. ``close_fds`` are descriptors meant for the program only (the server's socket, its audit pipe).
    """
    if not roots or budget <= 0:
        return
    child = os.fork()
    if child:
        os.waitpid(child, 0)
        return
    try:
        if os.fork():
            os._exit(0)
        for fd in close_fds:
            os.close(fd)
        os.nice(19)
        if after_fd is not None:
            select.select([after_fd], [], [], AFTER_TIMEOUT)
            os.close(after_fd)
        prefetch(roots, budget)
    except OSError as error:  # a cache warmer only: the program reads on demand anyway
        print(f"securehpc-node: prefetch stopped: {error}", file=sys.stderr)
    finally:
        os._exit(0)
