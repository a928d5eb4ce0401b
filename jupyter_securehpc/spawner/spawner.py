"""``SecureSlurmSpawner``: one named server per project, in the node launcher's sandbox on a Slurm node.

Built on batchspawner's ``SlurmSpawner`` for its Slurm state handling (``squeue`` regexes, job state in
the hub database), with its known defects replaced: options are allow-listed and validated
(``options.py``), the batch script is rendered from validated values only (``script.py``), commands run
as argument lists with timeouts (never a shell), the submit environment is never logged, and the job
reports its start stages, its port and the server extension's audit events through the strict endpoints
of ``api.py`` (never batchspawner's attribute-setting callback), with a secret made for each start that never
enters the sandbox (the hub keeps only its hash, in the server's state).
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import time
from pathlib import Path
from urllib.parse import quote

from batchspawner import SlurmSpawner
from batchspawner.batchspawner import JobStatus
from tornado import web
from traitlets import Bool, Integer, List, Unicode, default, validate
from traitlets.config import Config

from .. import jobspec
from ..audit import AuditLog
from ..config import SecureHPC
from ..keys import KeyStore, KeyStoreConfig
from ..projects.authz import Action
from ..projects.db import open_database
from ..projects.policy import Policy
from ..projects.roles import Role
from ..projects.service import Actor, BadInput, ProjectService, Refused
from ..session.env import HUB_PUBLIC_KEY_ENV, REPORT_TOKEN_ENV, REPORT_URL_ENV, WRAPPED_TOKEN_ENV
from ..session.reports import STAGE_KEY, STAGE_MOUNTING, STAGE_STARTING
from ..session.spec import SessionSpec
from . import api, options, pending, script, servers, slurm
from .reports import SessionEvent, new_report_secret

api.install_routes()

_SBATCH_OPTION = re.compile(r"--[a-z][a-z-]*(=[A-Za-z0-9_.:,/%@+-]+)?")
NONCE = script.NONCE
# The job's output is created by Slurm with this umask (slurm.py): the launcher's messages are the user's only.
JOB_UMASK = slurm.JOB_UMASK

# What the user's spawn page says when the job reports each start stage (reports.STAGES).
STAGE_MESSAGES = {
    STAGE_KEY: (50, "Project key delivered to the node"),
    STAGE_MOUNTING: (65, "Mounting the encrypted workspace and datasets"),
    STAGE_STARTING: (80, "Encrypted stores mounted; starting JupyterLab in the sandbox"),
}

# While a job waits, Slurm is asked for its reason at most this often (seconds); the page shows each new one.
PENDING_REASON_INTERVAL = 2.0

# The hub wraps each session's key as an admin does with ``securehpc key wrap``; its ``key.wrap`` events name it.
HUB_ACTOR = "jupyterhub-spawner"


class SpawnRefused(web.HTTPError):
    """A refusal of the request (options, project, membership) the user can act on: HTTP 400 with the message
    (the REST API answers it; the spawn page shows its form again with it), never a traceback."""

    def __init__(self, message: str) -> None:
        # "%s": the message is not a format string (a project name or an option may hold a "%").
        super().__init__(400, "%s", message)
        self.jupyterhub_message = message


class SpawnFailed(Exception):
    """A start that failed after it was accepted (the job ended, Slurm lost it); JupyterHub shows
    ``jupyterhub_message`` on the spawn page instead of a traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.jupyterhub_message = message


class SecureSlurmSpawner(SlurmSpawner):
    """Starts the server named after a project as a Slurm job of the person's principal in that project, in the
    node launcher's sandbox."""

    signing_key_file = Unicode(
        "/etc/securehpc/hub-signing.pem",
        help="""Ed25519 private key (PEM, readable by the hub only) that signs every job spec. Nodes verify with
        its public half (``hub-signing.pub``) in /etc/securehpc/ or ``$SECUREHPC_HUB_PUBLIC_KEY``.""",
    ).tag(config=True)

    node_command = Unicode(
        "securehpc-node",
        help="The node launcher on the compute nodes (a path, or a name on the job's PATH).",
    ).tag(config=True)

    job_output = Unicode(
        "/tmp/securehpc-%u-%j-{nonce}.log",  # noqa: S108 - on the node; %u: users cannot block each other's names
        help="""Slurm ``--output`` of secure jobs, on the node: the launcher's messages only (no data, no
        server log). An absolute path with Slurm's ``%u`` (user), ``%j`` (job id) and exactly one ``{nonce}``,
        which the spawner fills with random hex at each start: job ids start again on a new cluster, and a
        later job must never write into (or read) an older job's file. Slurm creates it with umask 077 (mode
        0600, the user's only); the launcher removes it after a normal end.""",
    ).tag(config=True)

    extra_sbatch_options = List(
        Unicode(),
        help="""Extra ``#SBATCH`` options for every secure job, e.g. ``["--account=secure", "--qos=secure"]``.
        Each must be a single ``--name`` or ``--name=value`` without spaces.""",
    ).tag(config=True)

    stage_limit_mib = Integer(
        0,
        help="""Datasets whose ciphertext adds up to at most this many MiB are decrypted into the session's
        private memory at start. Every later read runs at memory speed; the start takes about as long as
        reading that data once from disk; the copy counts against the job's memory (the user's choice, up to
        the project's ``max_memory_gb``), so at most half the job's free memory is staged and larger datasets
        stay mounted. See the README's benchmarks. 0: never.""",
    ).tag(config=True)

    prefetch_datasets = Bool(
        True,
        help="""Read the datasets that are not staged once in the background at start, into the page cache
        (within half the job's free memory), so that the first analysis reads from memory. It competes with a
        program that reads the same data at once (see the README's benchmarks); turn it off for such jobs.""",
    ).tag(config=True)

    session_audit_per_minute = Integer(
        600,
        help="""Audit events a running session may forward to the hub's central log per minute (the server
        extension's refusals). More are refused (HTTP 429, and one audit event per minute says so; the launcher
        counts what it could not forward in the job's output), so that one session cannot flood the log.""",
    ).tag(config=True)

    command_timeout = Integer(
        30, help="Seconds each Slurm command (sbatch, squeue, scancel) may take before it counts as failed."
    ).tag(config=True)

    @validate("extra_sbatch_options")
    def _check_sbatch_options(self, proposal: dict) -> list[str]:
        for option in proposal["value"]:
            if not _SBATCH_OPTION.fullmatch(option):
                raise ValueError(
                    f"SecureSlurmSpawner.extra_sbatch_options: {option!r} is not one --name or --name=value "
                    "without spaces"
                )
        return proposal["value"]

    @validate("job_output")
    def _check_job_output(self, proposal: dict) -> str:
        return script.check_job_output(proposal["value"], "SecureSlurmSpawner.job_output")

    @default("default_url")
    def _default_url_default(self) -> str:
        # JupyterLab (with the project banner and the restricted menus) is where a started session lands.
        return "/lab"

    @default("options_form")
    def _options_form_default(self):
        return lambda spawner: options.form(spawner.project_policies(), selected=spawner.name or None)

    # -- the site ---------------------------------------------------------------------------------------
    _sessions = None

    @property
    def site(self) -> SecureHPC:
        return SecureHPC(config=self.config)

    def _database(self):
        if SecureSlurmSpawner._sessions is None:
            SecureSlurmSpawner._sessions = open_database(self.site.db_url)
        return SecureSlurmSpawner._sessions

    @classmethod
    def site_projects(cls, config: Config) -> ProjectService:
        """The projects database of the hub's ``config``, through its one door; the hub acts as the admin that
        wraps session keys."""
        site = SecureHPC(config=config)
        if SecureSlurmSpawner._sessions is None:
            SecureSlurmSpawner._sessions = open_database(site.db_url)
        return ProjectService(
            sessions=SecureSlurmSpawner._sessions,
            keys=KeyStore(KeyStoreConfig(config=config)),
            audit=AuditLog(Path(site.audit_log)),
            store_root=Path(site.store_root),
            actor=Actor(admin=HUB_ACTOR),
        )

    def projects(self) -> ProjectService:
        return self.site_projects(self.config)

    @classmethod
    def refuse_server_name(cls, config: Config, user: str, server_name: str) -> str | None:
        """Why ``user`` may not create a server named ``server_name`` (servers.py), or None when it is one of
        their projects: a server is named after the project it opens. Each refusal is an audit event."""
        projects = sorted(cls.site_projects(config).startable_projects(user))
        if server_name in projects:
            return None
        reason = f"{user} has no project named {server_name!r}"
        AuditLog(Path(SecureHPC(config=config).audit_log)).append(
            actor=user, action=Action.SESSION_START.value, obj=f"server:{user}/{server_name}", outcome="denied",
            reason=reason,
        )  # fmt: skip
        if projects:
            where = f"start one of your projects: {', '.join(projects)}"
        else:
            where = "you are not a member of any project yet: ask a data owner to add you"
        return f"Cannot create the server {server_name!r}: a server is named after its project, and {reason}; {where}."

    def project_policies(self) -> dict[str, Policy]:
        """The user's projects and their policies (where they may start a session)."""
        return self.projects().startable_projects(self.user.name)

    def audit_event(self, action: str, outcome: str, reason: str, **details) -> None:
        AuditLog(Path(self.site.audit_log)).append(
            actor=self.user.name,
            action=action,
            obj=f"server:{self.user.name}/{self.name}",
            outcome=outcome,
            project=self.name or None,
            reason=reason,
            **details,
        )

    # -- options ----------------------------------------------------------------------------------------
    def options_from_form(self, formdata: dict) -> dict:
        """The form's fields, checked at once: a refusal shows the form again with the reason (HTTP 400)."""
        chosen = {key: value for key, value in formdata.items() if key in options.FIELDS}
        self._request(chosen)
        return chosen

    def _request(self, user_options: dict | None = None) -> tuple[options.SessionRequest, Policy]:
        policies = self.project_policies()
        user_options = self.user_options if user_options is None else user_options
        try:
            request = options.parse(dict(user_options or {}), policies, default_project=self.name or None)
        except options.OptionsError as error:
            self.audit_event(Action.SESSION_START.value, "denied", str(error))
            raise SpawnRefused(f"Cannot start this server: {error}.") from None
        if self.name and request.project != self.name:
            reason = f"this server is for project {self.name!r}, not {request.project!r}"
            self.audit_event(Action.SESSION_START.value, "denied", reason)
            raise SpawnRefused(f"Cannot start this server: {reason}. Start the server named {request.project}.")
        return request, policies[request.project]

    # -- commands, never through a shell (slurm.py, shared with headless runs) ---------------------------
    async def _run(self, argv: list[str], stdin: str | None = None, env: dict | None = None) -> str:
        return await slurm.run_command(argv, stdin=stdin, env=env, timeout=self.command_timeout)

    def _slurm_env(self) -> dict[str, str]:
        return slurm.slurm_env()

    async def query_job_status(self):  # noqa: ANN201 - batchspawner's contract
        if not self.job_id:
            self.job_status = ""
            return await super().query_job_status()
        try:
            self.job_status = await self._run(
                ["squeue", "--noheader", f"--jobs={self.job_id}", "--format=%T %B"], env=self._slurm_env()
            )
        except RuntimeError as error:
            if "Invalid job id" in str(error):
                self.job_status = ""
                return JobStatus.NOTFOUND  # finished long enough ago that Slurm forgot it
            # slurmctld briefly down: unknown, not dead (the server may be fine).
            self.log.warning("squeue for job %s: %s", self.job_id, error)
            return JobStatus.UNKNOWN
        if self.state_isrunning():
            return JobStatus.RUNNING
        if self.state_ispending():
            return JobStatus.PENDING
        # squeue answered and the job is not pending or running (or no longer listed): it ended.
        return JobStatus.NOTFOUND

    async def cancel_batch_job(self) -> None:
        if self.job_id:
            await self._run(["scancel", self.job_id], env=self._slurm_env())

    # -- reports from the job (api.py) -----------------------------------------------------------------
    accepts_port_report = False
    # SHA-256 (hex) of this start's report secret; the secret itself went to the job and is not kept.
    report_secret_hash: str | None = None
    _activity_at = float("-inf")

    @property
    def accepts_activity(self) -> bool:
        """Activity counts while the server exists (starting or running); a stopped server has none."""
        return self.server is not None

    def take_activity_slot(self, interval: float) -> bool:
        """Whether an activity report may change last_activity now: at most once per ``interval`` seconds."""
        now = time.monotonic()
        if now - self._activity_at < interval:
            return False
        self._activity_at = now
        return True

    @property
    def accepts_session_audit(self) -> bool:
        """The server extension's events are taken while the server starts or runs."""
        return self.accepts_port_report or self.server is not None

    def report_port(self, port: int) -> None:
        """Called by the port endpoint with this server's own token (see api.py)."""
        self.port = port
        self.accepts_port_report = False
        self._mark("port", 95, "JupyterLab answers; connecting you")
        if getattr(self, "_port_reported", None) is not None:
            self._port_reported.set()
        self.audit_event("session.port", "allowed", "reported by the job", port=port)

    def report_stage(self, stage: str) -> None:
        """Called by the stage endpoint while the job starts: progress for the user, times for the admin."""
        self._mark(stage, *STAGE_MESSAGES[stage])

    _audit_window = (0.0, 0, False)  # (minute's start, events taken, refusal recorded)

    def take_session_audit_budget(self, count: int) -> tuple[bool, bool]:
        """Whether ``count`` more events fit this minute's budget; and, if not, whether this is the minute's
        first refusal (the one that gets an audit event)."""
        start, taken, refused = self._audit_window
        now = time.monotonic()
        if now - start >= 60:
            start, taken, refused = now, 0, False
        if taken + count <= self.session_audit_per_minute:
            self._audit_window = (start, taken + count, refused)
            return True, False
        self._audit_window = (start, taken, True)
        return False, not refused

    def record_session_events(self, events: list[SessionEvent]) -> None:
        """The server extension's audit events (already bound to this session by ``reports.bind_events``), into
        the hub's central log, in this server's project, marked with the server that reported them (they are
        only as trustworthy as that session)."""
        log = AuditLog(Path(self.site.audit_log))
        for event in events:
            log.append(
                actor=event.actor,
                action=event.action,
                obj=event.obj,
                outcome=event.outcome,
                project=self.name or None,
                reason=event.reason,
                reported_by=f"server:{self.user.name}/{self.name}",
                **event.details,
            )

    # -- progress: what the user sees, and the start's timeline for the admin ---------------------------
    def _begin_timeline(self) -> None:
        self._timeline: list[tuple[str, float]] = [("requested", time.monotonic())]
        self._progress_events: list[dict] = []

    def _mark(self, step: str, progress: int, message: str) -> None:
        if not hasattr(self, "_timeline"):  # set by start(); a report can only arrive during one
            return
        self._timeline.append((step, time.monotonic()))
        self._progress_events.append({"progress": progress, "message": message})
        for waiter in getattr(self, "_progress_waiters", ()):
            waiter.set()

    def _reached(self, step: str) -> bool:
        return any(name == step for name, _ in getattr(self, "_timeline", []))

    def timeline(self) -> str:
        """How long after the request each step of the last start came (hub log, spawn benchmark)."""
        steps = getattr(self, "_timeline", [])
        return ", ".join(f"{name} +{t - steps[0][1]:.2f}s" for name, t in steps[1:]) if steps else ""

    async def progress(self):  # noqa: ANN201 - JupyterHub's contract: an async generator of events
        """Every step of the start as it happens: submitted, queued, running, key, mounts, JupyterLab."""
        # Woken by each new step at once, not on a timer: JupyterHub stops reading this generator as soon as the
        # start is done, so a step that waited for a timer tick (the last stage, just before the port) would
        # never reach the user's page.
        changed = asyncio.Event()
        waiters = self.__dict__.setdefault("_progress_waiters", set())  # one per open progress page
        waiters.add(changed)
        sent = 0
        try:
            while True:
                changed.clear()
                events = getattr(self, "_progress_events", [])
                while sent < len(events):
                    yield events[sent]
                    sent += 1
                if self.port:
                    return
                try:
                    await asyncio.wait_for(changed.wait(), timeout=1)
                except asyncio.TimeoutError:
                    pass  # nothing new within a second: look again
        finally:
            waiters.discard(changed)

    # -- start and stop ---------------------------------------------------------------------------------
    async def _cancel_interrupted_spawns(self, tag: str, account: str) -> None:
        """Jobs of this server left by a hub that died mid-spawn: found by their tag among the jobs of the
        principal ``account`` (the jobs' owner), cancelled."""
        listing = await self._run(
            ["squeue", "--noheader", f"--user={account}", "--format=%i|%k"], env=self._slurm_env()
        )
        for line in listing.splitlines():
            job_id, _, comment = line.partition("|")
            if comment.strip() == tag:
                self.log.warning("cancelling job %s of an interrupted spawn of %s", job_id, tag)
                await self._run(["scancel", job_id.strip()], env=self._slurm_env())

    async def start(self):  # noqa: ANN201 - JupyterHub's contract: (ip, port)
        self._begin_timeline()
        self.job_status = ""
        request, policy = self._request()
        self._partition, self._pending_reason, self._reason_checked_at = policy.partition, "", float("-inf")
        self._mark("checked", 10, f"Preparing the session key for project {request.project} and submitting the job")
        tag = script.job_tag(self.user.name, request.project, str(self.orm_spawner.id))
        site = self.site
        keys_config = KeyStoreConfig(config=self.config)
        try:
            # Membership and policy decided again, the key wrapped, a key.wrap event written: one call.
            grant = self.projects().session_grant(request.project, self.user.name)
        except (Refused, BadInput) as error:
            raise SpawnRefused(f"Cannot start this server: {error}.") from None
        wrapped, datasets, role = grant.wrapped, grant.mounted_datasets, grant.role.value
        self._wrapped_accessors = (wrapped.accessor, wrapped.wrapped_accessor)
        # The job runs as the person's principal in the project (slurm.job_account, from the grant, as for a
        # headless run of the same grant), never as the person's own account.
        try:
            account = slurm.job_account(grant)
        except slurm.SlurmError as error:
            self._revoke_wrapped()
            self.audit_event(Action.SESSION_START.value, "failed", str(error), principal=grant.principal)
            raise SpawnRefused(f"Cannot start this server: {error}.") from None
        self._job_account = account
        await self._cancel_interrupted_spawns(tag, account.name)
        spec = SessionSpec(
            project=request.project,
            user=self.user.name,
            role=Role(role),
            store_root=Path(site.store_root),
            vault_addr=keys_config.url,
            datasets=datasets,
            issued_at=time.time(),
            ttl=policy.key_ttl,
            key_store={
                "kv_mount": keys_config.kv_mount,
                "prefix": keys_config.prefix,
                "policy_prefix": keys_config.policy_prefix,
            },
            stage_limit_mib=self.stage_limit_mib,
            prefetch=self.prefetch_datasets,
            policy=policy,
            principal=account.name,
        )
        signed = jobspec.sign(spec, jobspec.load_private_key(Path(self.signing_key_file)))
        self._job_output_path = self.job_output.replace(NONCE, secrets.token_hex(8))
        settings = script.JobSettings(self.node_command, self._job_output_path, tuple(self.extra_sbatch_options))
        batch = script.render(request, policy, tag=tag, signed_spec=signed, settings=settings)
        env = {**self._slurm_env(), **self.get_env()}
        env[WRAPPED_TOKEN_ENV] = wrapped.token
        # The launcher's credential for its reports, new at every start; the launcher takes it out of its
        # environment at once, so nothing it starts (the sandbox) inherits it. The hub keeps only the hash.
        report_secret, self.report_secret_hash = new_report_secret()
        env[REPORT_TOKEN_ENV] = report_secret
        env[REPORT_URL_ENV] = self.report_url()
        # Nodes normally read the hub's public key from /etc/securehpc; a hub may name it for its jobs.
        if os.environ.get(HUB_PUBLIC_KEY_ENV):
            env[HUB_PUBLIC_KEY_ENV] = os.environ[HUB_PUBLIC_KEY_ENV]
        self.port = 0
        self._port_reported = asyncio.Event()
        self.accepts_port_report = True
        self.job_id = await slurm.submit(batch, account=account, env=env, timeout=self.command_timeout)
        self._mark("submitted", 20, f"Job {self.job_id} is waiting in the Slurm queue")
        # Who started it (the actor) and the account it runs as.
        self.audit_event(Action.SESSION_START.value, "allowed", role or "member", job_id=self.job_id, gpus=request.gpus,
                         principal=account.name)  # fmt: skip
        self.log.info("submitted job %s for %s as %s (%s)", self.job_id, self.user.name, account.name, tag)
        return await self._wait_for_port()

    def report_url(self) -> str:
        """Where this server's launcher reports (api.py), names quoted: ``<hub api>/securehpc/servers/U/S``."""
        user, server = quote(self.user.name, safe=""), quote(self.name, safe="")
        return f"{self.hub.api_url.rstrip('/')}/securehpc/servers/{user}/{server}"

    def user_env(self, env: dict) -> dict:
        """``USER``, ``HOME`` and ``SHELL`` of the job: its account's, the person's principal (batchspawner would
        look up an account of the hub user's name, which a person needs no longer: their sessions never run as
        it)."""
        account = getattr(self, "_job_account", None)
        if account is None:
            return env
        env["USER"], env["HOME"], env["SHELL"] = account.name, account.home, account.shell
        return env

    def get_env(self) -> dict:
        env = super().get_env()
        # The server never reports activity itself (its token is readable from a kernel, and the stock
        # endpoint takes any timestamp): the launcher does, with no time in it (api.py).
        env.pop("JUPYTERHUB_ACTIVITY_URL", None)
        return env

    async def _wait_for_port(self):
        while self.port == 0:
            status = await self.query_job_status()
            if status == JobStatus.RUNNING and not self._reached("running") and not self._reached("key"):
                node = self.state_gethost()
                self._mark("running", 35, f"Job {self.job_id} is running on {node}; delivering the project key")
            if status == JobStatus.PENDING:
                await self._report_pending_reason()
            if status not in (JobStatus.PENDING, JobStatus.RUNNING, JobStatus.UNKNOWN):
                reason = await self._job_reason()
                self.accepts_port_report = False
                self.audit_event(Action.SESSION_START.value, "failed", reason, job_id=self.job_id)
                raise SpawnFailed(f"The job for this server ended before the server started: {reason}")
            # Woken by the port report at once (the server already answers), else poll Slurm again.
            try:
                await asyncio.wait_for(self._port_reported.wait(), self.startup_poll_interval)
            except asyncio.TimeoutError:
                pass
        if not self.state_isrunning():  # the node comes from squeue's last answer: make sure it has one
            await self.query_job_status()
        self.ip = await self._node_address(self.state_gethost())
        self.log.info("server %s of %s answers on port %d: %s", self.name, self.user.name, self.port, self.timeline())
        return self.ip, self.port

    async def _report_pending_reason(self) -> None:
        """While the job waits, Slurm's reason in words on the spawn page (pending.py), each new one once."""
        now = time.monotonic()
        if now - self._reason_checked_at < PENDING_REASON_INTERVAL:
            return
        self._reason_checked_at = now
        try:
            reason = await self._run(
                ["squeue", "--noheader", f"--jobs={self.job_id}", "--format=%r"], env=self._slurm_env()
            )
        except RuntimeError:
            return  # the next poll says whether the job is still there
        # "None": not looked at yet; the page already says that the job waits in the queue.
        if reason and reason != "None" and reason != self._pending_reason:
            self._pending_reason = reason
            self._mark("pending", 25, f"Job {self.job_id} is {pending.describe(reason, self._partition)}")

    async def _node_address(self, node: str) -> str:
        """Where the proxy reaches the job: the node's NodeAddr (Slurm node names need not resolve)."""
        if not node:
            raise SpawnFailed(f"Slurm did not say where job {self.job_id} runs; try again")
        try:
            info = await self._run(["scontrol", "show", "node", node], env=self._slurm_env())
        except RuntimeError:
            return node
        match = re.search(r"\bNodeAddr=(\S+)", info)
        return match.group(1) if match else node

    async def _job_reason(self) -> str:
        """Why the job ended: Slurm's state and exit code, and the launcher's own last message when the job's
        output file is visible from the hub (shared storage, or the local cluster)."""
        try:
            info = await self._run(["scontrol", "show", "job", self.job_id], env=self._slurm_env())
        except RuntimeError:
            output = getattr(self, "_job_output_path", self.job_output)
            return f"job {self.job_id} is gone (see its output on the node: {output})"
        fields = dict(item.split("=", 1) for item in info.split() if "=" in item)
        reason = f"job {self.job_id} {fields.get('JobState', '?')}, exit code {fields.get('ExitCode', '?')}"
        output = Path(fields.get("StdOut", ""))
        try:
            lines = output.read_text(errors="replace").splitlines() if output.is_absolute() else []
        except OSError:
            lines = []
        starts = [index for index, line in enumerate(lines) if line.startswith("securehpc-node: ")]
        if starts:
            # The launcher's last message, with its indented details (a node's problems, each with its fix).
            message = [lines[starts[-1]].removeprefix("securehpc-node: ")]
            message += [line.strip() for line in lines[starts[-1] + 1 :] if line.startswith(" ")][:20]
            return f"{reason}: {' '.join(message)}"
        return f"{reason} (the launcher's messages are in {output} on the node)"

    def get_state(self) -> dict:
        state = super().get_state()
        accessors = getattr(self, "_wrapped_accessors", None)
        if accessors:
            state["securehpc_accessors"] = list(accessors)  # accessors, not tokens: they revoke, nothing else
        if self.report_secret_hash:
            # The hash, not the secret: reports keep working after a hub restart, and the state (in the hub's
            # database) gives nobody a credential.
            state["securehpc_report_hash"] = self.report_secret_hash
        return state

    def load_state(self, state: dict) -> None:
        super().load_state(state)
        if state.get("securehpc_accessors"):
            self._wrapped_accessors = tuple(state["securehpc_accessors"])
        if state.get("securehpc_report_hash"):
            self.report_secret_hash = state["securehpc_report_hash"]

    def clear_state(self) -> None:
        super().clear_state()
        self.report_secret_hash = None  # a stopped server takes no reports

    def run_post_stop_hook(self):  # noqa: ANN201 - JupyterHub's contract
        """After every stop, also of a refused or failed start: the options were for that start only.

        JupyterHub keeps the last ``user_options`` and reuses them for a later request without options; a
        refused option would be refused again, and a start without options must get the defaults."""
        self.orm_spawner.user_options = {}
        return super().run_post_stop_hook()

    async def stop(self, now: bool = False) -> None:
        self.report_secret_hash = None  # from now on the job's reports are refused
        self.accepts_port_report = False
        await super().stop(now=now)
        self._revoke_wrapped()
        self.audit_event("session.stop", "allowed", "stopped", job_id=self.job_id)

    def _revoke_wrapped(self) -> None:
        """Revoke this start's session tokens (by accessor): after a stop, or a start that never submitted."""
        accessors = getattr(self, "_wrapped_accessors", None)
        if accessors:
            try:
                KeyStore(KeyStoreConfig(config=self.config)).revoke_wrapping(
                    accessors[0], wrapped_accessor=accessors[1]
                )
            except Exception as error:  # the job is gone either way; report, do not fail the stop
                self.log.warning("could not revoke the session tokens of %s: %s", self.name, error)


servers.install(SecureSlurmSpawner)
