"""Every bubblewrap command line: the project sandbox's two layers, the store sandbox, the node check's probe.

Two layers for a session, because FUSE must be mounted by a process with ``CAP_SYS_ADMIN`` in its user
namespace, while the user's program must run without any capability:

1. The outer sandbox (started by the launcher as the real user): new user, mount, pid, ipc, uts, cgroup and
   network namespaces; uid 0 *inside* its user namespace with all capabilities there (none outside). Its
   root is an empty tmpfs holding only read-only system and Python paths, the ciphertext of exactly this
   session's stores, a private /tmp, and ``/dev/fuse``. ``node/mount_then_run.py`` mounts the stores there.
2. The inner sandbox (started by ``mount_then_run.py``): a nested user namespace mapping the real uid, every
   capability dropped, user namespaces disabled, the ciphertext folders hidden; it runs the program.

gocryptfs itself runs beside the inner sandbox in a nested user namespace of its own, as the real uid without
capabilities, on a FUSE descriptor the outer layer mounted (``gocryptfs_argv``).

The real uid is the project principal's (``principals/``): the job runs under it, never under the person's own
login account, so nothing the person starts on the node can enter these namespaces or read their ``/proc``.

Nothing of another project is bound in, so no path inside leads to it.

The store sandbox (``store_argv``) mounts one store for the admin command's import and verification
(``stores/gocryptfs.run_inside`` runs ``stores/copy_or_hash.py`` in it); the probe (``probe_argv``) is the
smallest sandbox, with which ``prereqs.py`` checks that bubblewrap works on this node at all.
"""

from __future__ import annotations

import glob
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from ..session.env import DATASETS_ENV, PROJECT_ENV, ROLE_ENV, SANDBOX_CONFIG_FD_ENV, WORKSPACE_ENV
from ..session.spec import SessionSpec
from ..util.pyenv import SYSTEM_DIRS, readonly_paths
from ..vocabulary import DatasetRef
from .prefetch import memory_budget
from .prereqs import unencrypted_swap

log = logging.getLogger(__name__)

CIPHER_ROOT = "/run/securehpc/cipher"
WORKSPACE = "/project"
DATASETS = "/datasets"


# Datasets never change after their import, so the kernel may keep their pages across opens: without it,
# FUSE drops the cache on every open and warm reads cost as much as cold ones (benchmarks/sandbox_read.py).
DATASET_OPTIONS = ("-kernel_cache",)
# Several members may work in one project at once, on different nodes, on the same ciphertext.
WORKSPACE_OPTIONS = ("-sharedstorage",)


@dataclass(frozen=True)
class Mount:
    """One gocryptfs store: its ciphertext (host path and where the outer sandbox sees it) and mount point."""

    host_cipher: Path
    cipher: str
    target: str
    read_only: bool
    options: tuple[str, ...] = ()
    # > 0: copy the plaintext (about this many bytes) into the sandbox's memory at start (node/staging.py).
    stage_bytes: int = 0
    # Read into the page cache in the background at start, within a memory budget (node/prefetch.py).
    prefetch: bool = False
    # The dataset whose store this is (its key is the session's key of this reference); None: the workspace.
    dataset: DatasetRef | None = None

    def as_dict(self, fd: int) -> dict:
        return {
            "cipher": self.cipher,
            "target": self.target,
            "read_only": self.read_only,
            "options": list(self.options),
            "stage_bytes": self.stage_bytes,
            "prefetch": self.prefetch,
            "fd": fd,
        }


def tree_size(path: Path) -> int:
    """Bytes of the files under ``path`` (ciphertext: a little more than the plaintext)."""
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def mounts_for(spec: SessionSpec) -> list[Mount]:
    """The workspace (read-write unless the role only looks) and every dataset (always read-only).

    Datasets within the staging budget (``stage_limit_mib``, at most half the job's free memory) are staged;
    the others are prefetched into the page cache when the spec asks for it.
    """
    mounts = [
        Mount(
            spec.workspace_store(),
            f"{CIPHER_ROOT}/workspace",
            WORKSPACE,
            read_only=not spec.workspace_writable,
            options=WORKSPACE_OPTIONS,
        )
    ]
    budget = spec.stage_limit_mib << 20
    if budget and unencrypted_swap():
        # A tmpfs in a user namespace cannot be mounted ``noswap`` (the kernel allows that option only to
        # the host's root): on a node with swap, staged plaintext could be paged out to disk. Mounted
        # datasets decrypt into the page cache, which is never swapped (it is dropped instead).
        log.warning("not staging datasets: this node has unencrypted swap (%s)", ", ".join(unencrypted_swap()))
        budget = 0
    if budget:
        # Staged files are tmpfs pages charged to the job's memory: never more than half of what the job
        # may still use (the program needs the rest; past the job's limit the start would be killed).
        budget = min(budget, memory_budget())
    for ref in spec.datasets:
        store = spec.dataset_store(ref)
        size = tree_size(store) if budget else 0
        staged = 0 < size <= budget
        budget -= size if staged else 0
        mounts.append(
            Mount(store, f"{CIPHER_ROOT}/datasets/{ref}", f"{DATASETS}/{ref}", read_only=True,
                  options=DATASET_OPTIONS, stage_bytes=size if staged else 0, prefetch=spec.prefetch and not staged,
                  dataset=ref)
        )  # fmt: skip
    return mounts


# Everything the launcher puts into the sandbox for the Jupyter server, read-only (the whole root of the
# sandbox is remounted read-only once it is set up: nothing inside can rename or replace what lies here).
SESSION_DIR = "/securehpc"
# The server extension's policy (serverext/session.py).
SESSION_FILE = f"{SESSION_DIR}/session.json"
# A headless run's RunSpec, for its runner (runs/runner.py).
RUN_FILE = f"{SESSION_DIR}/run.json"
# A read-only view of the launcher's folder that holds the hub-API socket (node/hubrelay.py listens there).
HUB_DIR = f"{SESSION_DIR}/hub"
HUB_SOCKET = "hub-api.sock"
# The server listens on a socket the launcher bound outside and handed in as a file descriptor; this path
# only tells jupyter-server that it serves on a unix socket. It never exists.
SERVER_SOCKET_NAME = f"{SESSION_DIR}/jupyter.sock"
# Jupyter's own config and data folders: empty and read-only, so that nothing a kernel writes (a kernel spec,
# a settings file, a static file, a config file) is ever served or loaded by the server.
JUPYTER_CONFIG_DIR = f"{SESSION_DIR}/jupyter/config"
JUPYTER_DATA_DIR = f"{SESSION_DIR}/jupyter/data"


def outer_argv(
    mounts: list[Mount],
    extra_ro: list[Path] = (),
    hub_dir: Path | None = None,
    session_fd: int | None = None,
    run_fd: int | None = None,
) -> list[str]:
    argv = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--clearenv"]
    argv += ["--uid", "0", "--gid", "0", "--cap-add", "ALL"]
    for name in SYSTEM_DIRS:
        path = Path("/") / name
        if path.is_symlink():
            argv += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            argv += ["--ro-bind", str(path), str(path)]
    argv += ["--proc", "/proc", "--dev", "/dev", "--dev-bind", "/dev/fuse", "/dev/fuse", *gpu_devices()]
    for folder in PRIVATE_TMPFS:
        argv += ["--tmpfs", folder]
    # After the tmpfs folders: the Python environment may live under one of them (a checkout in /tmp).
    argv += readonly_binds([*readonly_paths(), *extra_ro])
    argv += ["--dir", WORKSPACE, "--dir", DATASETS, "--dir", JUPYTER_CONFIG_DIR, "--dir", JUPYTER_DATA_DIR]
    if hub_dir is not None:
        # The way to the hub: the launcher's folder with the hub-API relay's socket, read-only.
        argv += ["--ro-bind", str(hub_dir), HUB_DIR]
    if session_fd is not None:
        # The server extension's policy: a read-only copy that nothing in the sandbox can change.
        argv += ["--ro-bind-data", str(session_fd), SESSION_FILE]
    if run_fd is not None:
        # A run's notebook, parameters and kernel, as the hub signed them: read-only too.
        argv += ["--ro-bind-data", str(run_fd), RUN_FILE]
    for mount in mounts:
        argv += ["--ro-bind" if mount.read_only else "--bind", str(mount.host_cipher), mount.cipher]
        argv += ["--dir", mount.target]
    # Last: the sandbox's root (and so /datasets, /securehpc and every mount point on it) becomes read-only.
    # The stores are mounted onto their folders afterwards, which a read-only parent does not prevent; /tmp,
    # /home, /run and /var are tmpfs mounts of their own and stay writable.
    argv += ["--remount-ro", "/", "--chdir", "/"]
    return argv


# The sandbox's own writable folders, each a private tmpfs.
PRIVATE_TMPFS = ("/tmp", "/home", "/run", "/var")  # noqa: S108


def readonly_binds(paths: list[Path]) -> list[str]:
    """bwrap arguments that bind ``paths`` read-only at the same place, also deep under a private tmpfs.

    For a checkout in ``/tmp/ci/main``, bwrap would create ``/tmp/ci`` on the writable /tmp, owned by the
    sandbox's user, who could then rename it (a folder moves with the mounts below it) and put a folder of
    its own at the environment's path: files it planted would be served as the environment's static files.
    So the first folder below such a tmpfs gets a tmpfs of its own, read-only once the binds are in: a mount
    point cannot be renamed, and nothing in a read-only file system can.
    """
    shields: list[str] = []
    for path in paths:
        for root in PRIVATE_TMPFS:
            below = path.relative_to(root).parts if path.is_relative_to(root) else ()
            if len(below) > 1 and f"{root}/{below[0]}" not in shields:
                shields.append(f"{root}/{below[0]}")
    argv = [arg for shield in shields for arg in ("--tmpfs", shield)]
    for path in sorted(paths, key=lambda path: len(path.parts)):
        argv += ["--ro-bind", str(path), str(path)]
    return argv + [arg for shield in shields for arg in ("--remount-ro", shield)]


def outer_command(
    mounts: list[Mount],
    config_fd: int,
    *,
    hub_dir: Path | None = None,
    session_fd: int | None = None,
    run_fd: int | None = None,
) -> list[str]:
    """The outer sandbox running ``node/mount_then_run.py``, its instructions on the pipe ``config_fd``."""
    return [
        *outer_argv(mounts, hub_dir=hub_dir, session_fd=session_fd, run_fd=run_fd),
        "--setenv", "PATH", os.environ.get("PATH", "/usr/bin:/bin"),
        "--setenv", SANDBOX_CONFIG_FD_ENV, str(config_fd),
        sys.executable, "-m", "jupyter_securehpc.node.mount_then_run",
    ]  # fmt: skip


def gpu_devices() -> list[str]:
    """bwrap arguments for the node's GPU device files; Slurm's CUDA_VISIBLE_DEVICES selects among them."""
    argv = []
    for device in sorted(glob.glob("/dev/nvidia*")):
        argv += ["--dev-bind", device, device]
    return argv


def inner_argv(uid: int, gid: int, program: list[str]) -> list[str]:
    """The nested sandbox that runs the user's program: real uid, no capabilities, no new namespaces."""
    return [
        "bwrap",
        "--unshare-user", "--unshare-pid", "--disable-userns",
        "--uid", str(uid), "--gid", str(gid),
        "--cap-drop", "ALL",
        "--die-with-parent",
        "--bind", "/", "/",
        "--proc", "/proc",
        # A /dev of its own: device nodes bound from the outer sandbox are unusable in a nested user
        # namespace (nodev), and /dev/fuse stays outside (the program mounts nothing).
        "--dev", "/dev",
        *gpu_devices(),
        # The program sees plaintext under /project and /datasets, never the ciphertext folders.
        "--tmpfs", "/run",
        "--chdir", WORKSPACE,
        "--",
        *program,
    ]  # fmt: skip


def gocryptfs_argv(uid: int, gid: int) -> list[str]:
    """The command prefix that runs gocryptfs in the outer sandbox as the principal's uid in a nested user
    namespace: not root, so with no capability (``stores/gocryptfs.serve_store`` says why). It keeps the
    outer sandbox's view of the files and shares its pid namespace (it dies with the sandbox)."""
    return [
        "bwrap",
        "--unshare-user", "--uid", str(uid), "--gid", str(gid),
        "--cap-drop", "ALL",
        "--bind", "/", "/",
        "--dev-bind", "/dev", "/dev",
        "--",
    ]  # fmt: skip


def program_env(spec: SessionSpec, uid_name: str) -> dict[str, str]:
    """The program's whole environment (bwrap --clearenv drops everything else, tokens included)."""
    env = {
        "PATH": f"{Path(sys.prefix) / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": f"/home/{uid_name}",
        "USER": uid_name,
        "LOGNAME": uid_name,
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "TMPDIR": "/tmp",  # noqa: S108 - the sandbox's private tmpfs
        PROJECT_ENV: spec.project,
        ROLE_ENV: spec.role.value,
        WORKSPACE_ENV: WORKSPACE,
        DATASETS_ENV: DATASETS,
    }
    for name in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", "TERM"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


# --- the store sandbox: one store, for the admin command's import and verification -----------------------


def store_argv(cipher_dir: Path, *, binds: dict[str, Path], writable: bool) -> list[str]:
    """bubblewrap for ``stores/copy_or_hash.py``: no network, private mounts, the store's ciphertext at
    /mnt/cipher (read-write only for an import) and ``binds`` (sandbox path -> host path) read-only."""
    argv = [
        "bwrap",
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--uid", "0",
        "--gid", "0",
        "--cap-add", "ALL",
        "--ro-bind", "/", "/",
        "--dev", "/dev",
        "--dev-bind", "/dev/fuse", "/dev/fuse",
        "--proc", "/proc",
        "--tmpfs", "/tmp",  # noqa: S108 - a private, empty tmpfs inside the sandbox
        "--tmpfs", "/mnt",
        "--bind" if writable else "--ro-bind", str(cipher_dir), "/mnt/cipher",
    ]  # fmt: skip
    # The Python environment again, in case it lives under /tmp (hidden by the private tmpfs above).
    argv += readonly_binds(readonly_paths())
    for inside, outside in binds.items():
        argv += ["--ro-bind", str(outside), inside]
    return argv


def probe_argv() -> list[str]:
    """The smallest sandbox with the namespaces a session needs, running ``true`` (node/prereqs.py)."""
    return ["bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "--proc", "/proc", "true"]
