"""Prepare a session once (token, node checks, keys, mounts), then run a program or a server in its sandbox.

``prepare`` is the one way to a session's keys, for ``exec`` (``run_program``, here) and ``serve``
(``serve.py``) alike. Order matters: everything that can be checked without the key is checked first (node
prerequisites, the user, the stores, the caller's own checks), so that a job that cannot run never consumes
its single-use token. The keys then live in this process's memory only until each is written into the pipe
that gocryptfs reads (``sandbox_command``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pwd
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..keys import KeyStore, KeyStoreConfig, KeyStoreError
from ..principals.accounts import NOLOGIN_SHELLS
from ..session.env import WRAPPED_TOKEN_ENV as TOKEN_ENV
from ..session.spec import SessionSpec
from ..stores.gocryptfs import key_to_password, pipe_with
from .errors import EX_NOPERM, EX_UNAVAILABLE, EX_USAGE, LaunchError
from .prefetch import memory_budget
from .prereqs import node_problems, store_problems
from .sandbox import Mount, mounts_for, outer_command, program_env

log = logging.getLogger(__name__)


def take_token(from_stdin: bool) -> str:
    """The wrapped token, from the environment (removed from it at once) or one line of standard input."""
    token = os.environ.pop(TOKEN_ENV, "")
    if not token and from_stdin:
        token = sys.stdin.readline().strip()
    if not token:
        where = "standard input" if from_stdin else f"${TOKEN_ENV} (or use --token-stdin)"
        raise LaunchError(f"no wrapped token: expected it in {where}", EX_USAGE)
    return token


def check_principal(spec: SessionSpec) -> str:
    """The job's account, if it is the spec's principal (never root, never the person's own login); else
    LaunchError before anything else happens."""
    if os.getuid() == 0:
        raise LaunchError(
            "refusing to run a session as root: sessions run as the project principal (sbatch --uid, as the "
            "spawner submits them)",
            EX_NOPERM,
        )
    if not spec.principal or spec.principal == spec.user:
        raise LaunchError(
            f"the session spec names no project principal for {spec.user} in {spec.project}: sessions never "
            "run as a person's own account (update the hub)",
            EX_NOPERM,
        )
    account = pwd.getpwuid(os.getuid())
    if account.pw_name != spec.principal:
        raise LaunchError(
            f"this session runs as {spec.principal} ({spec.user}'s principal in {spec.project}), but the job runs "
            f"as {account.pw_name}",
            EX_NOPERM,
        )
    if account.pw_shell not in NOLOGIN_SHELLS:
        raise LaunchError(
            f"the principal {account.pw_name} has the login shell {account.pw_shell}: nobody may log in as a "
            f"principal, fix it with `usermod --shell /usr/sbin/nologin {account.pw_name}`",
            EX_NOPERM,
        )
    return account.pw_name


def check_ready(spec: SessionSpec) -> list[Mount]:
    """Everything that needs no key: the account, the node, the stores. Raises LaunchError."""
    me = check_principal(spec)
    problems = node_problems() + store_problems(spec.store_root, spec.project)
    if problems:
        details = "\n".join(f"  - {problem}" for problem in problems)
        raise LaunchError(f"this node cannot run secure sessions:\n{details}", EX_UNAVAILABLE)
    mounts = mounts_for(spec)
    for mount in mounts:
        config = mount.host_cipher / "gocryptfs.conf"
        if not os.access(config, os.R_OK):
            raise LaunchError(
                f"store {mount.host_cipher} is missing or not readable by {me}: check the store root "
                f"({spec.store_root}) is mounted on this node and the project's permissions",
                EX_UNAVAILABLE,
            )
        if not mount.read_only and not os.access(mount.host_cipher, os.W_OK | os.X_OK):
            raise LaunchError(
                f"{me} may not write to the workspace store {mount.host_cipher}: it must belong to the project's "
                "group, mode 2770 (`securehpc account sync`; see the admin guide)",
                EX_UNAVAILABLE,
            )
    return mounts


def unwrap_keys(spec: SessionSpec, token: str, mounts: Sequence[Mount]) -> dict[str, bytes]:
    """mount target -> key, for exactly the stores of ``mounts`` (``check_ready``'s, from ``spec``); refuses a
    used, expired or foreign token."""
    # No token of its own: the wrapping token is the only credential a node gets.
    keys = KeyStore(KeyStoreConfig(url=spec.vault_addr, token="", **spec.key_store))
    try:
        session = keys.unwrap_session(
            token, datasets=spec.datasets, project=spec.project, issued_at=spec.issued_at, ttl=spec.ttl
        )
    except KeyStoreError as error:
        raise LaunchError(f"the session key was refused: {error}", EX_NOPERM) from None
    by_target = {}
    for mount in mounts:
        key = session.workspace if mount.dataset is None else session.datasets.get(str(mount.dataset))
        if key is None:
            raise LaunchError(
                f"the session has no key for dataset {mount.dataset}: it is not in the session spec", EX_NOPERM
            )
        by_target[mount.target] = key
    return by_target


def _key_pipe(key: bytes) -> int:
    return pipe_with(key_to_password(key))


@dataclass
class PreparedSession:
    """A session whose node, user and stores are checked and whose keys are unwrapped: ready to run once.

    ``keys`` (mount target -> key) are emptied when ``sandbox_command`` writes them into their pipes.
    """

    spec: SessionSpec
    mounts: list[Mount]
    keys: dict[str, bytes]


def prepare(spec: SessionSpec, token: str, *, checks: Sequence[Callable[[], object]] = ()) -> PreparedSession:
    """Check everything that needs no key (the node, the user, the stores, then the caller's ``checks``, which
    raise LaunchError), and only then use the single-use ``token`` for the session's keys."""
    mounts = check_ready(spec)
    for check in checks:
        check()
    keys = unwrap_keys(spec, token, mounts)
    return PreparedSession(spec, mounts, keys)


def _data_file(data: bytes) -> int:
    """A descriptor that reads ``data`` then EOF, for bwrap's ``--ro-bind-data``: a memory file, not a pipe, so
    that a run spec with an uploaded notebook (up to 1 MiB) does not fill a pipe nobody reads yet."""
    fd = os.memfd_create("securehpc-run", 0)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def sandbox_command(
    session: PreparedSession,
    program: list[str],
    *,
    extra_env: dict[str, str] | None = None,
    hub_dir: Path | None = None,
    uid: int | None = None,
    session_data: bytes | None = None,
    run_data: bytes | None = None,
    program_fds: Sequence[int] = (),
    status_fd: int | None = None,
    ready_fd: int | None = None,
) -> tuple[list[str], list[int]]:
    """The outer bwrap command and the descriptors it inherits (the caller closes its copies of the pipes
    this function made after starting it: the second list).

    ``uid`` is the user the command will run as (default: this process's user). ``program_fds`` reach the
    program itself (the server's listening socket, its audit pipe); ``status_fd`` gets a line once the
    stores are mounted; the prefetch waits for ``ready_fd`` to end. The caller owns those three kinds.
    ``session_data`` and ``run_data`` become the read-only files ``SESSION_FILE`` and ``RUN_FILE`` inside.
    """
    mounts, keys = session.mounts, session.keys
    fds = [_key_pipe(keys[mount.target]) for mount in mounts]
    keys.clear()
    session_fd = pipe_with(session_data) if session_data is not None else None
    run_fd = _data_file(run_data) if run_data is not None else None
    me = pwd.getpwuid(os.getuid() if uid is None else uid)
    config = {
        "mounts": [mount.as_dict(fd) for mount, fd in zip(mounts, fds, strict=True)],
        "uid": me.pw_uid,
        "gid": me.pw_gid,
        "program": program,
        "env": {**program_env(session.spec, me.pw_name), **(extra_env or {})},
        # Measured here: the job's cgroup is visible outside the sandbox, not inside.
        "prefetch_bytes": memory_budget(sum(m.stage_bytes for m in mounts)) if any(m.prefetch for m in mounts) else 0,
        "program_fds": list(program_fds),
        "status_fd": status_fd,
        "ready_fd": ready_fd,
    }
    # The instructions travel on a pipe too: the program's environment holds the server's hub API token,
    # and a bwrap argument would show it to every user of the node in /proc/PID/cmdline.
    config_fd = pipe_with(json.dumps(config).encode())
    argv = outer_command(mounts, config_fd, hub_dir=hub_dir, session_fd=session_fd, run_fd=run_fd)
    return argv, [*fds, config_fd, *(fd for fd in (session_fd, run_fd) if fd is not None)]


def run_program(session: PreparedSession, program: list[str]) -> int:
    """Start the sandbox and wait for it; SIGTERM/SIGINT/SIGHUP take the whole sandbox down."""
    argv, fds = sandbox_command(session, program)
    try:
        sandbox = subprocess.Popen(argv, pass_fds=fds)
    finally:
        for fd in fds:
            os.close(fd)

    def stop(signum: int, _frame: object) -> None:
        # The sandbox's pid namespace dies with its first process: every process and mount in it goes too.
        log.info("signal %d: stopping the sandbox", signum)
        sandbox.kill()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, stop)
    status = sandbox.wait()
    return 128 - status if status < 0 else status


def exec_program(spec: SessionSpec, program: list[str], *, token_from_stdin: bool) -> int:
    """``securehpc-node exec``: prepare, then run ``program`` in the sandbox until it ends."""
    return run_program(prepare(spec, take_token(token_from_stdin)), program)


def end_sandbox_on_signals(sandbox: asyncio.subprocess.Process, stopped: asyncio.Event) -> None:
    """On Slurm's scancel or time limit (SIGTERM), a hangup or ^C, kill the sandbox's first process: with its
    pid namespace every process, mount and staged byte of the session or run ends. ``stopped`` is set first,
    so that the caller tells this end from a failure."""

    def stop() -> None:
        stopped.set()
        sandbox.kill()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(signum, stop)
