"""``securehpc-node run``: a headless run's notebook, executed by papermill in the session's sandbox.

A run submitted through the hub starts with ``run --from-hub RUN_ID``: its batch script holds no spec and no key
(Slurm keeps batch scripts and their environment on its controller). The launcher asks the hub for both once, at
``<report URL>/start`` with the run's report secret; the hub answers only while Slurm shows this job running and
only the first time, deciding membership and policy now, so the key's ``key_ttl`` counts from the job's start. The
answer's spec is verified with the hub's public key as a spec file is, and must name this run; the wrapped token
stays in this process's memory (never in a file, argument, environment or log). ``run --spec FILE`` (with the
token in ``$SECUREHPC_WRAPPED_TOKEN`` or on standard input) is for runs started by hand.

Then the same prepared pipeline as ``exec`` and ``serve`` (``launcher.prepare``: node checks, the user, the
stores, then the single-use key; ``sandbox_command``: the two bubblewrap layers without network). The program is
the runner (``runs/runner.py``); the run's spec (notebook, parameters, kernel, as the hub signed them) is a
read-only file inside, and the runner tells its progress and its end on a pipe that this launcher reads and
checks with the run reports' parsers before anything goes to the hub.

The launcher reports to the hub with the run's own secret (``$SECUREHPC_REPORT_TOKEN``, taken out of the
environment at start; the sandbox never sees it): cells done, the end, and its own messages. The sandbox's
output is never copied to the job's output file, which holds the launcher's messages only (a store that would
not mount is shown while the runner has not started; after that, nothing of the sandbox), is readable by the
user alone, and is removed after a run that succeeded.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import re
import signal
import sys
import urllib.error
import urllib.request

from .. import jobspec
from ..session.env import REPORT_TOKEN_ENV, REPORT_URL_ENV, RUN_PROGRESS_FD_ENV, RUN_SPEC_ENV, WRAPPED_TOKEN_ENV
from ..session.reports import (
    KIND_RUN_END,
    KIND_RUN_MESSAGE,
    KIND_RUN_PROGRESS,
    KIND_RUN_START,
    MAX_RUN_START_ANSWER,
    REPORT_SCHEME,
    ReportError,
    RunEnd,
    parse_run_end,
    parse_run_progress,
    parse_run_start_answer,
    run_end_report,
    run_message_report,
    run_progress_report,
)
from ..session.spec import SessionSpec, SpecError
from .errors import EX_NOPERM, EX_UNAVAILABLE, EX_USAGE, LaunchError
from .hubreport import HubReporter
from .launcher import end_sandbox_on_signals, prepare, sandbox_command, take_token
from .sandbox import RUN_FILE
from .serve import private_output
from .spec import hub_public_key

log = logging.getLogger(__name__)

RUNNER = (sys.executable, "-m", "jupyter_securehpc.runs.runner")
# The end report is the one that matters: the hub may be restarting, so it is tried for a while.
END_ATTEMPTS = 12
END_RETRY_SECONDS = 5.0
MAX_LINE = 16 * 1024
# The start is asked again for five minutes (a hub restarting) while the hub does not answer or says "not yet"
# (503: its job id is not recorded yet, or Slurm did not answer it); any other refusal is final.
START_ATTEMPTS = 60
START_RETRY_SECONDS = 5.0
RUN_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class RunReporter(HubReporter):
    """The launcher's reports about its run (``runs/api.py`` takes them); without a report URL (a run started by
    hand) they are printed instead."""

    def __init__(self) -> None:
        super().__init__()
        self._last_progress: tuple[int, int] | None = None

    def message(self, text: str) -> None:
        """One of the launcher's own messages: into the job's output, and to the hub (``run logs``)."""
        print(f"securehpc-node: {text}", flush=True)
        if self.base_url:
            self._worker.submit(self._post_quietly, KIND_RUN_MESSAGE, run_message_report(text[:500]))

    def progress(self, done: int, total: int) -> None:
        if (done, total) == self._last_progress:
            return
        self._last_progress = (done, total)
        if self.base_url:
            self._worker.submit(self._post_quietly, KIND_RUN_PROGRESS, run_progress_report(done, total))

    def _ask_start(self) -> bytes:
        request = urllib.request.Request(  # noqa: S310 - the hub's URL, set by the hub in sbatch's environment
            f"{self.base_url}/{KIND_RUN_START}",
            data=b"{}",
            headers={"Authorization": f"{REPORT_SCHEME} {self._secret}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            return response.read(MAX_RUN_START_ANSWER + 1)

    async def start(self, run_id: str) -> tuple[str, str]:
        """The run's signed spec (text) and wrapped token, asked of the hub once; LaunchError, in words, when the
        hub refuses or never answers."""
        for attempt in range(START_ATTEMPTS):
            try:
                body = await asyncio.get_running_loop().run_in_executor(self._worker, self._ask_start)
                return parse_run_start_answer(body)
            except ReportError as error:
                raise LaunchError(f"run {run_id}: the hub's answer to the start is not usable: {error}",
                                  EX_UNAVAILABLE) from None  # fmt: skip
            except urllib.error.HTTPError as error:
                said = _hub_message(error)
                if error.code != 503:
                    raise LaunchError(f"run {run_id}: the hub refused to start it (HTTP {error.code}): {said}",
                                      EX_NOPERM) from None  # fmt: skip
                log.warning("the hub cannot start run %s yet (%s); attempt %d", run_id, said, attempt + 1)
            except (OSError, urllib.error.URLError) as error:
                log.warning("the hub did not answer the start of run %s (%s); attempt %d", run_id, error, attempt + 1)
            await asyncio.sleep(START_RETRY_SECONDS)
        raise LaunchError(f"run {run_id}: the hub did not give the run its spec and key; it did not start",
                          EX_UNAVAILABLE)  # fmt: skip

    async def end(self, end: RunEnd) -> bool:
        """Tell the hub how the run ended, trying again while the hub does not answer; whether it took it."""
        if not self.base_url:
            print(f"securehpc-node: run ended: {json.dumps(run_end_report(end))}", flush=True)
            return True
        for attempt in range(END_ATTEMPTS):
            try:
                await self._submit(KIND_RUN_END, run_end_report(end))
                return True
            except urllib.error.HTTPError as error:
                # Refused (the run is over for the hub: cancelled, or already ended): nothing to retry.
                log.warning("the hub did not take the run's end (HTTP %d)", error.code)
                return False
            except (OSError, urllib.error.URLError) as error:
                log.warning("the hub did not answer the run's end (%s); attempt %d", error, attempt + 1)
                await asyncio.sleep(END_RETRY_SECONDS)
        return False


def _hub_message(error: urllib.error.HTTPError) -> str:
    """The one line a refusal of the hub says (JupyterHub's ``{"status", "message"}``), printable and short."""
    try:
        message = json.loads(error.read(4096)).get("message")
    except (OSError, ValueError, AttributeError):
        message = None
    text = message if isinstance(message, str) and message else error.reason or "no reason given"
    return _CONTROL.sub(" ", str(text))[:300]


def check_hub_url(reporter: RunReporter, run_id: str) -> None:
    """Refuse before anything is posted: a run id that is not one, or a report URL of another run."""
    if not RUN_ID.fullmatch(run_id):
        raise LaunchError(f"{run_id[:60]!r} is not a run id", EX_USAGE)
    if not reporter.base_url or not reporter.base_url.endswith(f"/runs/{run_id}"):
        raise LaunchError(
            f"run {run_id}: --from-hub needs ${REPORT_URL_ENV} (ending in /runs/{run_id}) and ${REPORT_TOKEN_ENV}, "
            "which the hub puts into its runs' jobs: submit the run through the hub, or use --spec FILE",
            EX_USAGE,
        )


async def spec_from_hub(reporter: RunReporter, run_id: str) -> tuple[SessionSpec, str]:
    """The run's spec and wrapped token from the hub, the spec verified as a spec file is (the hub's public key)
    and naming this run."""
    text, token = await reporter.start(run_id)
    try:
        spec = jobspec.verify_session_spec(text, hub_public_key())
    except jobspec.SignatureError as error:
        raise LaunchError(f"run {run_id}: the spec the hub answered is refused: {error}", EX_NOPERM) from None
    except SpecError as error:
        raise LaunchError(f"run {run_id}: the spec the hub answered is not valid: {error}", EX_USAGE) from None
    if spec.run is None or spec.run.run_id != run_id:
        named = spec.run.run_id if spec.run else "no run"
        raise LaunchError(f"run {run_id}: the hub's spec names {named}, not this run: refusing it", EX_NOPERM)
    return spec, token


async def _read_sandbox_output(reader: asyncio.StreamReader, kept: list[str], started: asyncio.Event) -> None:
    """The sandbox's output: the launcher's own lines (a store that did not mount) are kept until the runner has
    started; from then on everything is the runner's and the kernel's (their log is in the workspace) and is
    read and dropped unseen."""
    while line := await reader.readline():
        text = line.decode(errors="replace").rstrip()
        if not started.is_set() and text.startswith("securehpc-node:") and len(kept) < 20:
            kept.append(text.removeprefix("securehpc-node:").strip()[:500])


async def _read_reports(
    reader: asyncio.StreamReader, reporter: RunReporter, started: asyncio.Event, ends: list[RunEnd]
) -> None:
    """The runner's reports (``KIND JSON`` lines), each checked by its parser; anything else is dropped."""
    while True:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError:
            return
        except asyncio.LimitOverrunError as error:
            await reader.readexactly(error.consumed)
            continue
        kind, _, payload = line.strip().partition(b" ")
        started.set()
        try:
            if kind == KIND_RUN_PROGRESS.encode():
                reporter.progress(*parse_run_progress(payload))
            elif kind == KIND_RUN_END.encode() and not ends:
                ends.append(parse_run_end(payload))
        except ReportError as error:
            log.warning("dropped a malformed report of the runner: %s", error)


def final_end(status: int, runner_end: RunEnd | None) -> RunEnd:
    """How the run ended, from the runner's own account and the sandbox's exit status (which wins)."""
    if runner_end is not None and runner_end.outcome == "succeeded":
        if status == 0:
            return RunEnd("succeeded", exit_code=0)
        return RunEnd("failed", exit_code=status % 256, problem="sandbox")
    if runner_end is not None:
        return dataclasses.replace(runner_end, exit_code=status % 256 if status else 1)
    return RunEnd("failed", exit_code=status % 256, problem="sandbox")


async def run(spec: SessionSpec | None, *, token_from_stdin: bool = False, run_id: str | None = None) -> int:
    """``securehpc-node run``: get the spec and key (``spec`` given, or from the hub for ``run_id``), prepare, run
    the notebook in the sandbox, report, and clean up."""
    output_file = private_output()
    token = None if spec is None else take_token(token_from_stdin)
    os.environ.pop(WRAPPED_TOKEN_ENV, None)  # nothing started later inherits one
    reporter = RunReporter()  # takes the report secret out of the environment before anything starts
    try:
        if spec is None:
            check_hub_url(reporter, run_id or "")
        try:
            if spec is None:
                spec, token = await spec_from_hub(reporter, run_id or "")
            if spec.run is None:
                raise LaunchError("this spec names no run: `securehpc-node run` needs the spec of a headless run",
                                  EX_USAGE)  # fmt: skip
            session = prepare(spec, token)
        except LaunchError as error:
            reporter.message(str(error).splitlines()[0])
            await reporter.end(RunEnd("failed", exit_code=error.exit_code % 256, problem="start"))
            error.reported = True  # the job's output has its line already
            raise
        del token
        reporter.message(f"run {spec.run.run_id}: keys delivered, starting papermill in the sandbox")
        status, stopped = await _run_sandbox(session, spec, reporter)
    finally:
        await asyncio.get_running_loop().run_in_executor(None, reporter.close)
    if status == 0 and output_file is not None:
        with contextlib.suppress(OSError):
            output_file.unlink()
    return status if not stopped else 128 + signal.SIGTERM


async def _run_sandbox(session, spec: SessionSpec, reporter: RunReporter) -> tuple[int, bool]:  # noqa: ANN001
    progress_read, progress_write = os.pipe()
    extra_env = {RUN_SPEC_ENV: RUN_FILE, RUN_PROGRESS_FD_ENV: str(progress_write)}
    argv, fds = sandbox_command(
        session,
        list(RUNNER),
        extra_env=extra_env,
        run_data=json.dumps(spec.run.to_dict()).encode(),
        program_fds=[progress_write],
    )
    try:
        sandbox = await asyncio.create_subprocess_exec(
            *argv,
            pass_fds=[*fds, progress_write],
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    finally:
        for fd in [*fds, progress_write]:
            os.close(fd)
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    end_sandbox_on_signals(sandbox, stopped)
    started, kept, ends = asyncio.Event(), [], []
    reader = asyncio.StreamReader(limit=MAX_LINE)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(progress_read, "rb", 0))
    tasks = [
        asyncio.create_task(_read_sandbox_output(sandbox.stdout, kept, started)),
        asyncio.create_task(_read_reports(reader, reporter, started, ends)),
    ]
    try:
        status = await sandbox.wait()
        await asyncio.wait(tasks, timeout=5)
    finally:
        if sandbox.returncode is None:
            sandbox.kill()
            await sandbox.wait()
        for task in tasks:
            task.cancel()
    status = 128 - status if status < 0 else status
    if stopped.is_set():
        reporter.message(f"run {spec.run.run_id}: stopped (cancelled, or its time limit was reached)")
        return status, True
    for line in kept:
        reporter.message(line)
    end = final_end(status, ends[0] if ends else None)
    reporter.message(f"run {spec.run.run_id}: {end.outcome} (exit status {status})")
    await reporter.end(end)
    return status, False
