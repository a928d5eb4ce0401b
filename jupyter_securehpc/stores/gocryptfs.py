"""Create gocryptfs stores and run code on their plaintext inside a private sandbox."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

# The key is 256 random bits from OpenBao, not a human password: scrypt's hardening buys nothing, so use
# gocryptfs' cheapest setting and spare every mount a second of CPU.
SCRYPT_N = "10"


class StoreError(RuntimeError):
    """A store could not be created, mounted or written; the message says what and where."""


def key_to_password(key: bytes) -> bytes:
    return key.hex().encode()


def pipe_with(data: bytes) -> int:
    """A pipe's read end that yields ``data`` then EOF (the key never touches a disk or argv)."""
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, data)
    finally:
        os.close(write_end)
    return read_end


def init_store(cipher_dir: Path, key: bytes) -> None:
    """Make an empty, initialised gocryptfs store in ``cipher_dir`` (which must not exist yet)."""
    cipher_dir.mkdir(mode=0o755)
    result = subprocess.run(
        ["gocryptfs", "-init", "-q", "-scryptn", SCRYPT_N, str(cipher_dir)],
        input=key_to_password(key),
        capture_output=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise StoreError(f"gocryptfs could not initialise {cipher_dir}: {result.stderr.decode().strip()}")
    # The config holds the master key encrypted with the store key; readers of the store need it.
    (cipher_dir / "gocryptfs.conf").chmod(0o444)


ALLOWED_OPTIONS = frozenset({"-kernel_cache", "-sharedstorage", "-noprealloc", "-serialize_reads"})


def mount_store(
    cipher: Path,
    target: Path,
    key_fd: int,
    *,
    read_only: bool,
    options: tuple[str, ...] | list[str] = (),
    ctlsock: Path | None = None,
) -> None:
    """Mount a store with the key read from ``key_fd`` (a pipe); must run inside a sandbox that may mount.

    ``ctlsock``: where gocryptfs answers path translations (for staging; a private path in the sandbox).

    Raises StoreError with gocryptfs' own message ("Password incorrect.", ...) if it fails.
    """
    unknown = set(options) - ALLOWED_OPTIONS
    if unknown:
        raise StoreError(f"gocryptfs options {sorted(unknown)} are not allowed; use {sorted(ALLOWED_OPTIONS)}")
    argv = ["gocryptfs", "-q", "-nosyslog", *(["-ro"] if read_only else []), *options]
    argv += [*(["-ctlsock", str(ctlsock)] if ctlsock else []), str(cipher), str(target)]
    # gocryptfs forks a daemon that keeps its output open: collect messages in a file (in the sandbox's
    # private /tmp), not a pipe, or waiting for the pipe's end would wait for the unmount.
    with tempfile.TemporaryFile("w+") as messages:
        result = subprocess.run(argv, stdin=key_fd, stdout=messages, stderr=messages, timeout=120, check=False)
        if result.returncode != 0:
            messages.seek(0)
            raise StoreError(f"cannot mount {target}: {messages.read().strip() or result.returncode}")


# The kernel's FUSE mount options for serve_store: what fusermount would pass for gocryptfs, minus allow_other (only
# processes with the mounting account's ids may use the mount) and default_permissions (the backing file
# system's own permissions decide, for gocryptfs' account).
FUSE_ROOT_MODE = 0o40000
FUSE_MAX_READ = 131072
MS_RDONLY, MS_NOSUID, MS_NODEV = 1, 2, 4
MNT_DETACH = 2
SERVE_READY_TIMEOUT = 120.0


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def serve_store(
    cipher: Path,
    target: Path,
    key_fd: int,
    *,
    runner: list[str],
    read_only: bool,
    options: tuple[str, ...] | list[str] = (),
    ctlsock: Path | None = None,
    messages: Path,
) -> subprocess.Popen:
    """Mount ``target`` as this process (root of the sandbox's user namespace) and serve it with gocryptfs run
    through ``runner``, a command prefix that makes it a user other than root (``node/sandbox.gocryptfs_argv``).

    Why: a workspace shared by a project's principals holds files of several owners, and gocryptfs as root
    reports each file's real owner, which the kernel cannot map into this namespace (and then refuses every
    write to it), or, with ``-force_owner``, gocryptfs 2.3 as root tries to act as the caller and fails. So
    this process mounts the FUSE file system itself (``fd=``) and hands the FUSE descriptor to gocryptfs
    (``/dev/fd/N``, go-fuse's "magic" mountpoint), which runs without any capability, shows every file as
    owned by the mounting account (``-force_owner``), and reaches the ciphertext with the principal's own
    rights: its own files as their owner, the other members' through the project's group.

    Returns the running gocryptfs (it serves until the mount is gone); raises StoreError with gocryptfs' own
    message ("Password incorrect.", ...) if it does not come up. Its messages go to ``messages``.
    """
    unknown = set(options) - ALLOWED_OPTIONS
    if unknown:
        raise StoreError(f"gocryptfs options {sorted(unknown)} are not allowed; use {sorted(ALLOWED_OPTIONS)}")
    fuse_fd = os.open("/dev/fuse", os.O_RDWR)
    try:
        data = (
            f"fd={fuse_fd},rootmode={FUSE_ROOT_MODE:o},user_id={os.getuid()},group_id={os.getgid()},"
            f"max_read={FUSE_MAX_READ}"
        )
        flags = MS_NOSUID | MS_NODEV | (MS_RDONLY if read_only else 0)
        libc = _libc()
        if libc.mount(b"gocryptfs", str(target).encode(), b"fuse.gocryptfs", flags, data.encode()) != 0:
            error = ctypes.get_errno()
            raise StoreError(f"cannot mount {target}: {os.strerror(error)}")
        argv = [*runner, "gocryptfs", "-fg", "-q", "-force_owner", f"{os.getuid()}:{os.getgid()}"]
        argv += [*(["-ro"] if read_only else []), *options, *(["-ctlsock", str(ctlsock)] if ctlsock else [])]
        argv += [str(cipher), f"/dev/fd/{fuse_fd}"]
        with open(messages, "w") as out:
            server = subprocess.Popen(argv, stdin=key_fd, stdout=out, stderr=out, pass_fds=(fuse_fd,))
    finally:
        os.close(fuse_fd)
    # Only gocryptfs holds the FUSE descriptor now: the first request waits until it answers, and fails at once
    # (ENOTCONN) if it exits without serving, e.g. after a wrong key.
    ready: list[BaseException | None] = []
    probe = threading.Thread(target=lambda: ready.append(_first_request(target)), daemon=True)
    probe.start()
    probe.join(SERVE_READY_TIMEOUT)
    if ready == [None]:
        return server
    server.kill()
    server.wait()
    _libc().umount2(str(target).encode(), MNT_DETACH)
    said = messages.read_text(errors="replace").strip() if messages.exists() else ""
    reason = said or (str(ready[0]) if ready else f"gocryptfs did not answer within {SERVE_READY_TIMEOUT:g} s")
    raise StoreError(f"cannot mount {target}: {reason}")


def _first_request(target: Path) -> BaseException | None:
    try:
        os.stat(target)
    except OSError as error:
        return error
    return None


def run_inside(
    cipher_dir: Path,
    key: bytes,
    mode: str,
    *,
    binds: dict[str, Path] | None = None,
    writable: bool = False,
    timeout: float = 3600,
) -> dict:
    """Mount the store inside a fresh sandbox (``node/sandbox.store_argv``) and run ``mode`` of
    ``stores/copy_or_hash.py`` on it.

    Returns the JSON that the step printed; raises StoreError with its message if it failed.
    """
    # Here, not at the top: every bubblewrap command line lives in node/sandbox.py, which imports this package.
    from ..node.sandbox import store_argv
    from ..session.env import STORE_KEY_FD_ENV

    key_fd = pipe_with(key_to_password(key))
    try:
        result = subprocess.run(
            [
                *store_argv(cipher_dir, binds=binds or {}, writable=writable),
                sys.executable,
                "-m",
                "jupyter_securehpc.stores.copy_or_hash",
                mode,
            ],
            pass_fds=(key_fd,),
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), STORE_KEY_FD_ENV: str(key_fd)},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    finally:
        os.close(key_fd)
    if result.returncode != 0:
        message = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "no message"
        raise StoreError(f"{mode} in {cipher_dir} failed: {message}")
    return json.loads(result.stdout)
