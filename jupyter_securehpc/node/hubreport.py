"""What ``securehpc-node serve`` tells the hub, with the server's own token, through the spawner's strict
endpoints (``jupyter_securehpc.spawner.api``): its start stages, its port, the server extension's audit events.

Posts go one at a time through one worker thread, in order, so that the relays' event loop never waits for
the hub. Without ``$SECUREHPC_REPORT_URL`` (a session run by hand) everything is printed instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .launcher import EX_UNAVAILABLE, LaunchError

log = logging.getLogger(__name__)

REPORT_URL_ENV = "SECUREHPC_REPORT_URL"
AUDIT_BATCH = 50  # events per post; the hub takes at most 100 and 64 KiB


class HubReporter:
    def __init__(self, base_url: str | None = None, token: str | None = None) -> None:
        self.base_url = (base_url if base_url is not None else os.environ.get(REPORT_URL_ENV, "")).rstrip("/")
        self._token = token if token is not None else os.environ.get("JUPYTERHUB_API_TOKEN", "")
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hub-report")

    def _post(self, kind: str, payload: dict) -> None:
        request = urllib.request.Request(  # noqa: S310 - the hub's URL, set by the spawner
            f"{self.base_url}/{kind}",
            data=json.dumps(payload).encode(),
            headers={"Authorization": f"token {self._token}", "Content-Type": "application/json"},
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
        self._worker.submit(self._post_quietly, "stage", {"stage": stage})

    def _post_quietly(self, kind: str, payload: dict) -> None:
        try:
            self._post(kind, payload)
        except (OSError, urllib.error.URLError) as error:
            log.warning("the hub did not take the %s report %s: %s", kind, payload, error)

    async def port(self, port: int) -> None:
        """The one report the session cannot do without: if the hub refuses it (no spawn waits for this
        server any more, e.g. after a hub restart), the error ends the session instead of orphaning it."""
        if not self.base_url:
            print(f"securehpc-node: serving on port {port}", flush=True)
            return
        try:
            await self._submit("port", {"port": port})
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

    async def audit(self, lines: list[bytes]) -> None:
        """The extension's events: to the job's output always (the node's record), and to the hub's log."""
        for line in lines:
            print(f"securehpc-audit: {line.decode(errors='replace')}", flush=True)
        if not self.base_url or not lines:
            return
        events = []
        for line in lines:
            try:
                events.append(json.loads(line))
            except ValueError:
                log.warning("skipping an audit line that is not JSON")
        for start in range(0, len(events), AUDIT_BATCH):
            try:
                await self._submit("audit", {"events": events[start : start + AUDIT_BATCH]})
            except (OSError, urllib.error.URLError) as error:
                log.warning("the hub did not take %d audit events (they are in this output): %s", len(events), error)

    def close(self) -> None:
        self._worker.shutdown(wait=True)


class AuditFollower:
    """New complete lines of the extension's audit log, as they are appended."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def new_lines(self) -> list[bytes]:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        return complete.splitlines()

    async def follow(self, reporter: HubReporter, interval: float = 1.0) -> None:
        while True:
            await reporter.audit(self.new_lines())
            await asyncio.sleep(interval)
