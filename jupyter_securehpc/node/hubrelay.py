"""The sandbox's only way to the hub: an HTTP relay that passes the few requests the Jupyter server needs.

The single-user server (``jupyterhub.singleuser``, ``jupyterhub.services.auth.HubOAuth``) asks the hub three
things, and only these pass:

- ``GET <api>`` (or ``<api>/``): the hub's version, once at start;
- ``GET <api>/user``: whom a token or a login cookie belongs to;
- ``POST <api>/oauth2/token``: a browser login's code exchanged for a token.

Everything else (other paths or methods, query strings, chunked or oversized bodies, upgrades) is answered
403 by the relay itself and reported as an audit event. Code in a kernel can read the server's hub API
token, so the relay, not the token, decides what the sandbox reaches: no activity reports (the launcher
sends those, see ``hubreport.py``), no user or server management, no token minting, no job reports.

Each request gets its own upstream connection with ``Connection: close``, so that the relay sees every
request line. The server caches the hub's answers, so this costs a connection per new token, not per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MAX_HEAD = 16 * 1024
MAX_BODY = 64 * 1024
CHUNK = 1 << 16
# Hop-by-hop headers the relay sets itself (RFC 9110 7.6.1), plus the ones that would change how the body or
# the connection is read.
_DROPPED = {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer"}
_REFUSED_HEADERS = {b"transfer-encoding": "chunked bodies", b"upgrade": "protocol upgrades", b"expect": "Expect"}
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class Refused(Exception):
    """The request does not pass; ``status`` and ``reason`` are what the sandbox is told."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    headers: list[tuple[bytes, bytes]]
    body: bytes


def allowed_requests(api_path: str) -> frozenset[tuple[str, str]]:
    """(method, exact request target) pairs the server needs; ``api_path`` is e.g. ``/hub/api``."""
    api = api_path.rstrip("/")
    return frozenset({("GET", api), ("GET", f"{api}/"), ("GET", f"{api}/user"), ("POST", f"{api}/oauth2/token")})


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """One request from the sandbox; None at a clean end of the connection. Raises ``Refused``."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as error:
        if not error.partial.strip():
            return None
        raise Refused(400, "incomplete request") from None
    except asyncio.LimitOverrunError:
        raise Refused(431, f"request head larger than {MAX_HEAD} bytes") from None
    lines = head[:-4].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[2] not in (b"HTTP/1.0", b"HTTP/1.1") or not _TOKEN.fullmatch(parts[0]):
        raise Refused(400, "malformed request line")
    headers = []
    length = 0
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.fullmatch(name):
            raise Refused(400, "malformed header")
        lowered, value = name.lower(), value.strip()
        if lowered in _REFUSED_HEADERS:
            raise Refused(400, f"{_REFUSED_HEADERS[lowered]} are not relayed to the hub")
        if lowered == b"content-length":
            if length or not value.isdigit():
                raise Refused(400, "bad Content-Length")
            length = int(value)
        if lowered not in _DROPPED:
            headers.append((name, value))
    if length > MAX_BODY:
        raise Refused(413, f"request body larger than {MAX_BODY} bytes")
    try:
        body = await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise Refused(400, "incomplete request body") from None
    return Request(parts[0].decode("ascii"), parts[1].decode("latin-1"), headers, body)


def _answer(status: int, reason: str) -> bytes:
    body = json.dumps({"status": status, "message": f"refused by the secure session's hub relay: {reason}"}).encode()
    return (
        f"HTTP/1.1 {status} Refused\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body


def printable(text: str, limit: int = 200) -> str:
    """A request target as it may appear in an audit event: printable ASCII, bounded."""
    cleaned = "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in text)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."


class HubRelay:
    """Listens on a unix socket inside the sandbox's view; forwards allowed requests to the hub's API."""

    def __init__(
        self,
        hub_host: str,
        hub_port: int,
        api_path: str,
        on_refused: Callable[[str, str, int, str], None],
    ) -> None:
        self.hub = (hub_host, hub_port)
        self.allowed = allowed_requests(api_path)
        # Called with (method, target, status, reason) for every refusal: the launcher audits it.
        self.on_refused = on_refused

    async def listen(self, socket_path: Path) -> asyncio.Server:
        server = await asyncio.start_unix_server(self._handle, str(socket_path), limit=MAX_HEAD)
        socket_path.chmod(0o600)
        return server

    def check(self, request: Request) -> None:
        if (request.method, request.target) not in self.allowed:
            raise Refused(403, "the sandbox may only ask the hub who a token belongs to and finish a login")

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        method = target = "?"
        try:
            request = await read_request(reader)
            if request is None:
                return
            method, target = request.method, request.target
            self.check(request)
            await self._forward(request, writer)
        except Refused as refused:
            self.on_refused(printable(method, 16), printable(target.split("?", 1)[0]), refused.status, refused.reason)
            with contextlib.suppress(OSError):
                writer.write(_answer(refused.status, refused.reason))
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError) as error:
            log.warning("hub relay: %s", getattr(error, "strerror", None) or type(error).__name__)
        finally:
            writer.close()

    async def _forward(self, request: Request, client: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.hub)
        except OSError as error:
            log.warning("hub relay: the hub API at %s:%d does not answer: %s", *self.hub, error.strerror)
            client.write(_answer(502, "the hub does not answer"))
            return
        try:
            head = [f"{request.method} {request.target} HTTP/1.1".encode("latin-1")]
            head += [name + b": " + value for name, value in request.headers]
            head += [b"Connection: close", b"", b""]
            up_writer.write(b"\r\n".join(head) + request.body)
            await up_writer.drain()
            while data := await up_reader.read(CHUNK):
                client.write(data)
                await client.drain()
        finally:
            up_writer.close()
