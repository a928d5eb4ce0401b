"""What the server process does to itself: serve on the launcher's socket, keep secrets from its children.

- ``SECUREHPC_SERVER_FD=N``: an AF_UNIX stream socket, bound and listening, that the node launcher created
  outside the sandbox. The server serves on exactly this descriptor and never binds, replaces or removes a
  path: the launcher also passes ``--ServerApp.sock=PATH`` (a path that need not exist) only so that
  jupyter-server knows it is on a unix socket (``_bind_http_server`` is replaced on the instance). Anything
  else behind N (a file, a TCP or datagram socket, one that does not listen) refuses the start.
- Descriptors the launcher passed (the socket, the audit pipe) become close-on-exec: kernels and terminals
  never inherit them.
- ``*_TOKEN`` variables (``JUPYTERHUB_API_TOKEN``, ``JPY_API_TOKEN``, ``JUPYTER_TOKEN``...) are read into the
  objects that need them and removed from ``os.environ``, so that kernels and terminals started later do not
  get them.
- The process is not dumpable (``PR_SET_DUMPABLE`` 0: same-uid processes, the kernel among them, cannot read
  its ``/proc/PID/environ``, ``mem`` or ``fd``, nor ptrace it) and writes no core file (``RLIMIT_CORE`` 0),
  so decrypted data in its memory does not reach a disk.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import socket
import stat
from typing import Any

from jupyter_securehpc.session.env import SERVER_FD_ENV

PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3


class ProcessSetupError(Exception):
    """The process cannot be set up as the session needs; the message says what to fix."""


def take_listening_socket() -> socket.socket | None:
    """The launcher's listening socket from ``$SECUREHPC_SERVER_FD`` (close-on-exec), None without it."""
    raw = os.environ.get(SERVER_FD_ENV)
    if raw is None:
        return None
    if not raw.isdigit() or int(raw) < 3:
        raise ProcessSetupError(f"${SERVER_FD_ENV} must be a descriptor number of 3 or more, got {raw!r}")
    fd = int(raw)
    try:
        mode = os.fstat(fd).st_mode
    except OSError as err:
        raise ProcessSetupError(f"${SERVER_FD_ENV}={fd} is not an open descriptor: {err.strerror}") from None
    if not stat.S_ISSOCK(mode):
        raise ProcessSetupError(f"${SERVER_FD_ENV}={fd} is not a socket")
    sock = socket.socket(fileno=fd)
    listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM or not listening:
        sock.detach()  # not ours to close: refusing to start is enough
        raise ProcessSetupError(f"${SERVER_FD_ENV}={fd} must be a listening AF_UNIX stream socket")
    sock.set_inheritable(False)
    sock.setblocking(False)
    return sock


def serve_on(serverapp: Any, sock: socket.socket) -> None:
    """Make ``serverapp`` serve on ``sock`` instead of binding its ``sock`` path or a port."""
    if not serverapp.sock:
        # jupyter-server would otherwise look for a free TCP port first (and bind it for a moment).
        raise ProcessSetupError(
            f"${SERVER_FD_ENV} is set but ServerApp.sock is not: pass --ServerApp.sock=PATH (any path; it is "
            "not bound) so that jupyter-server serves on a unix socket"
        )

    def bind_http_server() -> None:
        serverapp.http_server.add_socket(sock)

    # An instance attribute: init_httpserver schedules ``self._bind_http_server`` on the IO loop.
    serverapp._bind_http_server = bind_http_server


def scrub_tokens(environ: os._Environ[str] | dict[str, str] | None = None) -> list[str]:
    """Remove every ``*_TOKEN`` variable (and ``JPY_API_TOKEN``); the names removed, never the values."""
    environ = os.environ if environ is None else environ
    names = sorted(name for name in environ if name.upper().endswith("_TOKEN") or name == "JPY_API_TOKEN")
    for name in names:
        del environ[name]
    return names


def read_tokens(serverapp: Any) -> None:
    """Make the objects that read tokens from the environment read them now (traitlets read them lazily)."""
    provider = getattr(serverapp, "identity_provider", None)
    if provider is None:
        return
    hub_auth = getattr(provider, "hub_auth", None)
    if hub_auth is not None:
        _ = hub_auth.api_token
    _ = provider.token


def not_dumpable() -> None:
    """PR_SET_DUMPABLE 0 and RLIMIT_CORE (0, 0); raises ``ProcessSetupError`` if either fails."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise ProcessSetupError(f"prctl(PR_SET_DUMPABLE, 0) failed: {os.strerror(err)}")
    if libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise ProcessSetupError("the process is still dumpable after prctl(PR_SET_DUMPABLE, 0)")
