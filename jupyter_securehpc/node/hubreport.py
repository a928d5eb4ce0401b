"""What ``securehpc-node serve`` tells the hub (``jupyter_securehpc.spawner.api``): its start stages, its port,
the session's audit events, its activity, and the parameter names of the notebooks saved in it.

The credential is the session's report secret (``$SECUREHPC_REPORT_TOKEN``, taken out of the environment
at start): it never enters the sandbox, so code in a kernel cannot report anything in the session's name.
The server's own hub API token stays with the server, which needs it to authenticate its users.

The server extension's audit pipe carries its refusals and, as ``{"parameters": {...}}`` lines, the changes of
the hub's notebook parameter index (``session.parameters``): each is parsed here with the hub's own strict parser
before it is posted; one that does not parse is not posted, and becomes an audit event (``session.parameters``,
denied) instead.

Posts go one at a time through one worker thread, in order, so that the relays' event loop never waits for
the hub. Without ``$SECUREHPC_REPORT_URL`` (a session run by hand) stages and the port are printed instead,
and audit events are only counted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from ..session.env import REPORT_TOKEN_ENV, REPORT_URL_ENV
from ..session.parameters import KIND_PARAMETERS, PIPE_KEY, ParametersChange, parameters_report, parse_parameters_change
from ..session.reports import (
    KIND_ACTIVITY,
    KIND_AUDIT,
    KIND_PORT,
    KIND_STAGE,
    REPORT_SCHEME,
    ReportError,
    activity_report,
    audit_report,
    port_report,
    stage_report,
)
from .errors import EX_UNAVAILABLE, LaunchError

log = logging.getLogger(__name__)

AUDIT_BATCH = 50  # events per post; the hub takes at most 100 and 64 KiB
MAX_PENDING = 1000  # audit events kept for a hub that does not take them; beyond, they are counted only
MAX_PENDING_PARAMETERS = 200  # parameter index changes kept likewise
MAX_LINE = 64 * 1024


def take_report_token() -> str:
    """The report secret, removed from this process's environment (nothing started later inherits it)."""
    return os.environ.pop(REPORT_TOKEN_ENV, "")


class HubReporter:
    def __init__(self, base_url: str | None = None, secret: str | None = None) -> None:
        self.base_url = (base_url if base_url is not None else os.environ.get(REPORT_URL_ENV, "")).rstrip("/")
        self._secret = secret if secret is not None else take_report_token()
        if self.base_url and not self._secret:
            raise LaunchError(
                f"${REPORT_URL_ENV} is set but ${REPORT_TOKEN_ENV} is not: the hub gives every session a report "
                "secret; start the session through the hub",
                EX_UNAVAILABLE,
            )
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hub-report")
        self.pending: deque[dict] = deque()
        self.pending_parameters: deque[ParametersChange] = deque()
        self.forwarded = 0
        self.dropped = 0
        self._flushing = asyncio.Lock()

    def _post(self, kind: str, payload: dict) -> None:
        request = urllib.request.Request(  # noqa: S310 - the hub's URL, set by the spawner
            f"{self.base_url}/{kind}",
            data=json.dumps(payload).encode(),
            # JupyterHub scrubs Authorization headers from its logs.
            headers={"Authorization": f"{REPORT_SCHEME} {self._secret}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            response.read()

    async def _submit(self, kind: str, payload: dict) -> None:
        await asyncio.get_running_loop().run_in_executor(self._worker, self._post, kind, payload)

    def stage(self, stage: str) -> None:
        """Progress for the user's spawn page, queued without waiting: the start goes on while the hub takes
        it (the single worker keeps the order, and the port report comes after). A hub that does not take it
        costs nothing but a log line."""
        if not self.base_url:
            print(f"securehpc-node: {stage}", flush=True)
            return
        self._worker.submit(self._post_quietly, KIND_STAGE, stage_report(stage))

    def _post_quietly(self, kind: str, payload: dict) -> None:
        try:
            self._post(kind, payload)
        except (OSError, urllib.error.URLError) as error:
            log.warning("the hub did not take the %s report: %s", kind, error)

    async def port(self, port: int) -> None:
        """The one report the session cannot do without: if the hub refuses it (no spawn waits for this
        server any more, e.g. after a hub restart), the error ends the session instead of orphaning it."""
        if not self.base_url:
            print(f"securehpc-node: serving on port {port}", flush=True)
            return
        try:
            await self._submit(KIND_PORT, port_report(port))
        except urllib.error.HTTPError as error:
            raise LaunchError(
                f"the hub refused this server's port (HTTP {error.code}): no start of this server waits for it "
                "any more (the hub restarted, or the server was stopped meanwhile); ending the session",
                EX_UNAVAILABLE,
            ) from None
        except (OSError, urllib.error.URLError) as error:
            message = f"could not report the port to the hub at {self.base_url}: {error}"
            raise LaunchError(message, EX_UNAVAILABLE) from None
        log.info("reported port %d to the hub", port)

    async def activity(self) -> None:
        """ "Someone used this server just now": the hub records its own clock (the body carries no time)."""
        if self.base_url:
            self._worker.submit(self._post_quietly, KIND_ACTIVITY, activity_report())

    def queue(self, event: dict) -> None:
        if len(self.pending) >= MAX_PENDING:
            self.dropped += 1
            return
        self.pending.append(event)

    def parameters(self, change: ParametersChange) -> None:
        """Queue a change of the notebook parameter index (checked already), sent in order with the next flush."""
        if len(self.pending_parameters) >= MAX_PENDING_PARAMETERS:
            self.dropped_parameters += 1
            return
        self.pending_parameters.append(change)

    dropped_parameters = 0
    forwarded_parameters = 0

    async def flush(self) -> None:
        """Send the queued audit events and index changes; those the hub does not take stay queued for the next
        flush (refused ones are dropped: the hub answered why in its own audit log)."""
        async with self._flushing:
            await self._flush()
            await self._flush_parameters()

    async def _flush_parameters(self) -> None:
        if not self.base_url:
            self.pending_parameters.clear()
            return
        while self.pending_parameters:
            change = self.pending_parameters[0]
            try:
                await self._submit(KIND_PARAMETERS, parameters_report(change))
            except urllib.error.HTTPError as error:
                if error.code in (400, 403, 404):  # refused for good (and audited by the hub): do not retry
                    log.warning("the hub refused a notebook parameters report (HTTP %d)", error.code)
                    self.dropped_parameters += 1
                    self.pending_parameters.popleft()
                    continue
                log.warning("the hub did not take a notebook parameters report yet (HTTP %d)", error.code)
                return
            except (OSError, urllib.error.URLError) as error:
                log.warning("the hub did not take a notebook parameters report yet: %s", error)
                return
            self.pending_parameters.popleft()
            self.forwarded_parameters += 1

    async def _flush(self) -> None:
        if not self.base_url:
            self.forwarded += len(self.pending)
            self.pending.clear()
            return
        while self.pending:
            batch = [self.pending[i] for i in range(min(AUDIT_BATCH, len(self.pending)))]
            try:
                await self._submit(KIND_AUDIT, audit_report(batch))
            except urllib.error.HTTPError as error:
                if error.code == 400:  # the hub will never take these: say so, do not retry forever
                    log.warning("the hub refused %d audit events as malformed", len(batch))
                    self.dropped += len(batch)
                    for _ in batch:
                        self.pending.popleft()
                    continue
                log.warning("the hub did not take %d audit events yet (HTTP %d)", len(batch), error.code)
                return
            except (OSError, urllib.error.URLError) as error:
                log.warning("the hub did not take %d audit events yet: %s", len(batch), error)
                return
            for _ in batch:
                self.pending.popleft()
            self.forwarded += len(batch)

    def summary(self) -> str:
        """For the job's output at the end: counts only (the events' objects are paths in the project)."""
        left = len(self.pending) + self.dropped
        text = f"{self.forwarded} audit events forwarded to the hub" + (f", {left} could not be" if left else "")
        changes = self.forwarded_parameters + len(self.pending_parameters) + self.dropped_parameters
        if changes:
            unsent = len(self.pending_parameters) + self.dropped_parameters
            text += f"; {self.forwarded_parameters} notebook parameter reports" + (f", {unsent} not" if unsent else "")
        return text

    def close(self) -> None:
        self._worker.shutdown(wait=True)


def parameters_refusal(user: str, project: str, reason: str) -> dict:
    """An audit event (the server extension's event shape) for an index change the launcher would not post."""
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "actor": user,
        "action": "session.parameters",
        "object": f"server:{user}/{project}",
        "project": project,
        "outcome": "denied",
        "reason": f"the session's notebook parameters report was not posted: {reason}"[:1000],
    }


def take_pipe_line(event: dict, reporter: HubReporter, refused: Callable[[str], dict] | None) -> None:
    """One decoded line of the audit pipe: an index change (``{"parameters": {...}}``, parsed strictly) or an
    audit event (the hub parses those)."""
    if PIPE_KEY not in event:
        reporter.queue(event)
        return
    try:
        if list(event) != [PIPE_KEY]:
            raise ReportError(f"a line with {PIPE_KEY!r} must hold nothing else")
        change = parse_parameters_change(event[PIPE_KEY])
    except ReportError as error:
        log.warning("the server extension wrote a notebook parameters report that is not valid: %s", error)
        reporter.dropped_parameters += 1
        if refused is not None:
            reporter.queue(refused(str(error)))
        return
    reporter.parameters(change)


async def read_audit_pipe(
    reader: asyncio.StreamReader, reporter: HubReporter, refused: Callable[[str], dict] | None = None
) -> None:
    """Queue the server extension's events and index changes, one JSON object per line, from the pipe only the
    server holds, until the server ends (``reporter.flush`` sends them). ``refused(reason)`` makes the audit
    event for an index change that does not parse."""
    while True:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError:
            return  # the server ended
        except asyncio.LimitOverrunError as error:
            await reader.readexactly(error.consumed)  # skip the overlong line's start; its rest follows
            reporter.dropped += 1
            continue
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        if isinstance(event, dict):
            take_pipe_line(event, reporter, refused)
        else:
            reporter.dropped += 1


async def open_pipe_reader(fd: int) -> asyncio.StreamReader:
    """An asyncio reader over the read end of a pipe (the reader owns the descriptor from now on)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_LINE)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0))
    return reader
