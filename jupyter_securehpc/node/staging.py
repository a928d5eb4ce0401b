"""Staging: copy a small dataset's plaintext into the sandbox's private memory once, at start.

Reads through FUSE cost a round trip to gocryptfs per request and per open; for many small files that
dominates (benchmarks/sandbox_read.py). A dataset that fits the budget is decrypted once, in parallel,
into a tmpfs that exists only in the sandbox's mount namespace, then made read-only; the FUSE mount is
dropped. The plaintext is in RAM (counted against the job's memory), never on disk, and vanishes with
the sandbox like the mount would.

Regular files are decrypted straight from their ciphertext (``stores/cipherfiles.py``): one large read per
chunk and AES-GCM in this process, instead of 128 KiB FUSE requests that cost gocryptfs more CPU than the
cipher. The mount still lists the tree; each file's ciphertext is found by the inode number gocryptfs
passes through, or asked of its control socket. Other entries (symlinks), and stores in a format other
than gocryptfs' default, are copied through the mount.

The work is split into chunks of at most ``CHUNK`` bytes, handed out in file order to a few threads: a
single large file then keeps several reads in flight, and small files are done side by side.
``node/prefetch.py`` reads with the same plan.
"""

from __future__ import annotations

import ctypes
import os
import stat
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..stores import cipherfiles

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT = 1, 2, 4, 32
MNT_DETACH = 2
CHUNK = 8 << 20
BUFFER = 1 << 20
WORKERS = 4
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


def walk(source: Path) -> Iterator[tuple[Path, list[str], list[str]]]:
    """os.walk in name order: the order in which a program that lists the dataset usually reads it."""
    for folder, dirnames, filenames in os.walk(source):
        dirnames.sort()
        yield Path(folder), dirnames, sorted(filenames)


def chunks(files: list[tuple[Path, int]]) -> Iterator[tuple[Path, int, int]]:
    """(relative path, offset, length) in file order; an empty file is one empty chunk (it must exist)."""
    for relative, size in files:
        yield relative, 0, min(size, CHUNK)
        for offset in range(CHUNK, size, CHUNK):
            yield relative, offset, min(CHUNK, size - offset)


def run_chunks(
    work: Iterator[tuple[Path, int, int]], do: Callable[[Path, int, int, bytearray], int], buffer: int = BUFFER
) -> int:
    """Run ``do(relative, offset, length, buffer)`` over the chunks on WORKERS threads; bytes done."""
    lock = threading.Lock()
    local = threading.local()

    def worker() -> int:
        done = 0
        local.buffer = bytearray(buffer)
        while True:
            with lock:  # chunks leave in order, so the front of the dataset is ready first
                item = next(work, None)
            if item is None:
                return done
            done += do(*item, local.buffer)

    with ThreadPoolExecutor(WORKERS) as pool:
        return sum(pool.map(lambda _: worker(), range(WORKERS)))


def copy_range(source: Path, target: Path, offset: int, length: int, buffer: bytearray) -> int:
    """Copy ``length`` bytes at ``offset`` (pread/pwrite, so that threads share a file without seeking)."""
    src = os.open(source, os.O_RDONLY)
    try:
        dst = os.open(target, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            view, end = memoryview(buffer), offset + length
            while offset < end:
                n = os.preadv(src, [view[: min(BUFFER, end - offset)]], offset)
                if n == 0:
                    raise OSError(f"{source} ended early at {offset} bytes")
                os.pwrite(dst, view[:n], offset)
                offset += n
        finally:
            os.close(dst)
    finally:
        os.close(src)
    return length


class Decrypter:
    """Decrypts a mounted store's regular files from their ciphertext (see the module's docstring)."""

    def __init__(self, cipher_dir: Path, password: bytes | bytearray, ctlsock: Path) -> None:
        self.cipher_dir = cipher_dir
        self.aead = cipherfiles.content_key(cipherfiles.read_config(cipher_dir), bytes(password))
        self.ctlsock = ctlsock
        self.sources: dict[Path, Path] = {}

    def locate(self, files: list[tuple[Path, int, int]]) -> None:
        """Find the ciphertext of each (relative path, size, inode) and check that its size matches."""
        by_inode = cipherfiles.cipher_inodes(self.cipher_dir)
        translator = None
        try:
            for relative, size, inode in files:
                expected = cipherfiles.cipher_size(size)
                source = by_inode.get(inode)
                if source is None or source.stat().st_size != expected:  # not passed through: ask gocryptfs
                    translator = translator or cipherfiles.PathTranslator(self.ctlsock)
                    source = self.cipher_dir / translator.cipher_path(relative)
                    if source.stat().st_size != expected:
                        raise cipherfiles.CipherError(f"the ciphertext of {relative} changed while staging")
                self.sources[relative] = source
        finally:
            if translator:
                translator.close()

    def __call__(self, target: Path, relative: Path, offset: int, length: int, buffer: bytearray) -> int:
        return cipherfiles.decrypt_range(self.aead, self.sources[relative], target / relative, offset, length, buffer)


def copy_tree(source: Path, target: Path, decrypter: Decrypter | None = None) -> int:
    """Copy every folder and file, in parallel chunks; returns the bytes copied.

    With a decrypter, regular files are decrypted from their ciphertext instead of read through ``source``.
    """
    files, direct = [], []
    for folder, dirnames, filenames in walk(source):
        relative = folder.relative_to(source)
        for name in dirnames:
            (target / relative / name).mkdir()
        for name in filenames:
            info = (folder / name).lstat()
            if decrypter and stat.S_ISREG(info.st_mode):
                direct.append((relative / name, info.st_size, info.st_ino))
            else:  # a symlink is copied as the file it points to
                files.append((relative / name, (folder / name).stat().st_size))

    def copy(relative: Path, offset: int, length: int, buffer: bytearray) -> int:
        return copy_range(source / relative, target / relative, offset, length, buffer)

    done = 0
    if direct:
        decrypter.locate(direct)
        plan = chunks([(relative, size) for relative, size, _ in direct])
        done += run_chunks(plan, lambda *work: decrypter(target, *work), buffer=cipherfiles.buffer_size(CHUNK))
    return done + run_chunks(chunks(files), copy)


def stage(plain_mount: Path, target: Path, size_bytes: int, decrypter: Decrypter | None = None) -> None:
    """Replace a mounted dataset by a read-only in-memory copy at ``target``."""
    # Room for the files plus tmpfs' own bookkeeping; the copy fails cleanly (ENOSPC) if the estimate is off.
    mount_tmpfs(target, int(size_bytes * 1.05) + (64 << 20))
    copy_tree(plain_mount, target, decrypter)
    remount_read_only(target)
    detach(plain_mount)
