"""``dataset import``: encrypt a local folder into a new dataset store, all or nothing.

The copy goes into a locked ``.incoming-*`` folder beside the final one, is verified through a second,
fresh mount against the hash manifest taken while copying, and only then renamed into place. Any failure
removes the incoming folder; a crash leaves an unlocked ``.incoming-*`` folder that no database row points
to and whose key was never stored (the next import into that folder removes it).
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .copy_or_hash import MANIFEST
from .gocryptfs import StoreError, init_store, run_inside

INCOMING_PREFIX = ".incoming-"


class SourceError(ValueError):
    """The source folder cannot be imported as it is; the message names the path and the fix."""


@dataclass(frozen=True)
class ImportResult:
    file_count: int
    size_bytes: int
    manifest_sha256: str


def check_source(src: Path) -> tuple[int, int]:
    """Refuse a source that is missing, unreadable, or holds anything but folders and regular files.

    Returns (file count, total bytes). Symbolic links are refused rather than followed: they could point
    at data outside the folder the data owner chose.
    """
    if not src.exists():
        raise SourceError(f"source folder {src} does not exist")
    if src.is_symlink() or not src.is_dir():
        raise SourceError(f"source {src} is not a folder: give the folder that holds the dataset's files")
    count = size = 0
    for folder, dirnames, filenames in os.walk(src, onerror=_raise_unreadable):
        for name in [*dirnames, *filenames]:
            path = Path(folder) / name
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                raise SourceError(f"{path} is a symbolic link: copy the file it points to into the folder")
            if stat.S_ISDIR(mode):
                if not os.access(path, os.R_OK | os.X_OK):
                    raise SourceError(f"folder {path} is not readable: fix its permissions")
                continue
            if not stat.S_ISREG(mode):
                raise SourceError(f"{path} is not a regular file (device, socket or pipe): remove it")
            if not os.access(path, os.R_OK):
                raise SourceError(f"file {path} is not readable: fix its permissions")
            if folder == str(src) and name == MANIFEST:
                raise SourceError(f"{path}: the name {MANIFEST} is reserved for the import manifest")
            count += 1
            size += path.lstat().st_size
    return count, size


def _raise_unreadable(error: OSError) -> None:
    raise SourceError(f"cannot read {error.filename}: {error.strerror}")


def manifest_digest(manifest: dict) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


@contextmanager
def incoming_dir(parent: Path) -> Iterator[Path]:
    """A new ``.incoming-*`` folder in ``parent``, locked while this process builds it.

    The lock (``flock`` on a sibling ``.lock`` file) tells :func:`remove_stale_incoming` that the folder
    is still being written; when the builder dies, the kernel drops the lock and the folder counts as stale.
    On success the caller renames the folder away; on failure it is removed.
    """
    parent.mkdir(parents=True, exist_ok=True)
    path = parent / f"{INCOMING_PREFIX}{secrets.token_hex(8)}"
    lock_path = path.with_name(path.name + ".lock")
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)  # gone already when the caller renamed it
            lock_path.unlink(missing_ok=True)


def remove_stale_incoming(parent: Path) -> None:
    """Delete what interrupted imports left: ciphertext whose key was never stored, never registered."""
    if not parent.is_dir():
        return
    for lock_path in parent.glob(f"{INCOMING_PREFIX}*.lock"):
        with open(lock_path) as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # another import is writing it right now
            shutil.rmtree(lock_path.with_suffix(""), ignore_errors=True)
            lock_path.unlink(missing_ok=True)


def import_folder(src: Path, target: Path, key: bytes) -> ImportResult:
    """Encrypt ``src`` into the new store ``target`` with ``key``; nothing is left at ``target`` on failure."""
    src = src.absolute()
    check_source(src)
    if target.exists():
        raise StoreError(f"{target} exists already")
    with incoming_dir(target.parent) as incoming:
        init_store(incoming, key)
        copied = run_inside(incoming, key, "copy", binds={"/mnt/src": src}, writable=True)
        # Read everything back through a new mount: this checks the ciphertext on disk, not a cache.
        verified = run_inside(incoming, key, "hashes")
        if verified["files"] != copied["files"] or verified["stored_manifest"] != copied:
            bad = sorted(
                path
                for path in set(copied["files"]) | set(verified["files"])
                if copied["files"].get(path) != verified["files"].get(path)
            )
            raise StoreError(f"verification after copy failed for {len(bad)} file(s), first {bad[:1]}")
        _sync_filesystem(incoming)
        os.rename(incoming, target)
        _fsync_dir(target.parent)
    size = sum(os.path.getsize(os.path.join(src, path)) for path in copied["files"])
    return ImportResult(len(copied["files"]), size, manifest_digest(copied))


def read_hashes(store: Path, key: bytes) -> dict[str, str]:
    """sha256 of every file in a store, read through a read-only mount in a sandbox."""
    return run_inside(store, key, "hashes")["files"]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_filesystem(path: Path) -> None:
    """Make every ciphertext file and folder durable with one syncfs(2) of the store's file system,
    instead of an fsync per file through FUSE."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if ctypes.CDLL(None, use_errno=True).syncfs(fd) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"syncfs of {path}: {os.strerror(errno)}")
    finally:
        os.close(fd)
