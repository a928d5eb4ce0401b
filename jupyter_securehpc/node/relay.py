"""Byte relays between the sandbox's unix sockets and the node's TCP world.

The sandbox has no network. Two relays, run by the launcher outside it, are its only ways out:
- node TCP port -> the Jupyter server's unix socket (for the hub's proxy);
- a unix socket inside -> the hub API's TCP address (for authentication and activity reports).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

log = logging.getLogger(__name__)
CHUNK = 1 << 16


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()


async def _join(client: tuple, upstream: tuple) -> None:
    (client_reader, client_writer), (up_reader, up_writer) = client, upstream
    try:
        await asyncio.gather(_pump(client_reader, up_writer), _pump(up_reader, client_writer))
    finally:
        for writer in (client_writer, up_writer):
            writer.close()


async def tcp_to_unix(host: str, port: int, socket_path: Path) -> asyncio.Server:
    """Listen on ``host:port`` (0: any free port) and forward each connection to ``socket_path``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream = await asyncio.open_unix_connection(str(socket_path))
        except OSError as error:
            log.warning("relay: the server socket does not answer: %s", error.strerror)
            writer.close()
            return
        await _join((reader, writer), upstream)

    return await asyncio.start_server(handle, host, port)


async def unix_to_tcp(socket_path: Path, host: str, port: int) -> asyncio.Server:
    """Listen on ``socket_path`` (mode 0600) and forward each connection to ``host:port``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream = await asyncio.open_connection(host, port)
        except OSError as error:
            log.warning("relay: the hub API at %s:%d does not answer: %s", host, port, error.strerror)
            writer.close()
            return
        await _join((reader, writer), upstream)

    server = await asyncio.start_unix_server(handle, str(socket_path))
    socket_path.chmod(0o600)
    return server
