"""The public relay: the node's TCP port (for the hub's proxy) to the Jupyter server's listening socket.

The launcher binds the server's unix socket itself, in a private folder that is never part of the sandbox,
and hands the listening descriptor to the server (``SECUREHPC_SERVER_FD``). Before every connection the
relay checks that the path still names the very socket it bound (same device and inode, still a socket):
anything else (a replaced file, a symlink to another socket) is refused. The hub-API direction is
``hubrelay.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
CHUNK = 1 << 16


@dataclass(frozen=True)
class OwnSocket:
    """A listening unix socket the launcher bound: its path and the identity it had then."""

    path: Path
    device: int
    inode: int

    def is_intact(self) -> bool:
        try:
            info = os.lstat(self.path)
        except OSError:
            return False
        return stat.S_ISSOCK(info.st_mode) and (info.st_dev, info.st_ino) == (self.device, self.inode)


def bind_listening(path: Path, backlog: int = 128) -> tuple[socket.socket, OwnSocket]:
    """Bind and listen on ``path`` (mode 0600); the socket (inheritable by the sandbox) and its identity."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(path))
        path.chmod(0o600)
        listener.listen(backlog)
        info = os.lstat(path)
    except OSError:
        listener.close()
        raise
    return listener, OwnSocket(path, info.st_dev, info.st_ino)


class Traffic:
    """When bytes last went through the public relay (the launcher's activity reports)."""

    def __init__(self) -> None:
        self.last = 0.0

    def seen(self) -> None:
        self.last = time.time()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, traffic: Traffic | None) -> None:
    try:
        while data := await reader.read(CHUNK):
            if traffic is not None:
                traffic.seen()
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()


async def tcp_to_unix(host: str, port: int, target: OwnSocket, traffic: Traffic | None = None) -> asyncio.Server:
    """Listen on ``host:port`` (0: any free port) and forward each connection to ``target``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not target.is_intact():
            log.error("relay: %s is no longer the socket this launcher bound; refusing the connection", target.path)
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(str(target.path))
        except OSError as error:
            log.warning("relay: the server socket does not answer: %s", error.strerror)
            writer.close()
            return
        try:
            await asyncio.gather(_pump(reader, up_writer, traffic), _pump(up_reader, writer, traffic))
        finally:
            writer.close()
            up_writer.close()

    return await asyncio.start_server(handle, host, port)
