"""The hub's side of headless runs: submit, start, cancel, and follow Slurm until each run has ended.

A submission records and audits the run (``ProjectService.submit_run``: membership, role, the request against the
policy, ``max_concurrent_runs``; refusals before anything is submitted) and submits its batch script
(``spawner/script.py``, ``mode="run"``) with ``sbatch --uid`` as the person's principal in the project
(``ProjectService.run_job``; ``spawner/slurm.py``, shared with the spawner). Nothing of the run is in the job:
the script holds its tag and resources, sbatch's environment the report URL, the run's own report secret (the hub
keeps its SHA-256 in the run's row) and the hub's public key; no key is wrapped yet. Slurm keeps scripts and their
environment on its controller, which is why the run's notebook, parameter values and uploaded notebook are not
there.

At its start the job asks once (``start``, ``runs/api.py``'s ``/runs/ID/start`` with the report secret): while
Slurm shows it running and only the first time (``ProjectService.claim_run_start`` records the claim before a key
exists), the hub decides membership and policy again and wraps the session key (``session_grant``, audited as
``key.wrap``), signs the session spec with the run spec inside and answers both. The key's ``key_ttl`` therefore
counts from the job's start, however long it queued; a person removed meanwhile gets no key and the run ends
failed, saying why.

A hub restart loses nothing: runs live in the projects database, their jobs are tagged (``securehpc-run:RUN_ID``),
and a run the hub was submitting when it stopped is found by its tag or ended as not submitted; no run is ever
submitted twice. Slurm being down makes a run ``unknown``, never ``failed``. The poller asks Slurm about every
queued or running run every ``SecureRuns.poll_interval`` seconds (and ``run show`` asks at once), for the ends a
run cannot report itself (its time limit, a cancel in Slurm, a failed node).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import os
import re
import secrets
import time
from pathlib import Path

from traitlets import Bool, Float, Integer, Unicode, default, validate
from traitlets.config import Configurable

from .. import jobspec
from ..audit import AuditLog
from ..config import SecureHPC
from ..keys import KeyStore, KeyStoreConfig
from ..projects.db import open_database
from ..projects.runs import RunJob, RunRecord
from ..projects.service import Actor, ProjectService
from ..session.env import HUB_PUBLIC_KEY_ENV, REPORT_TOKEN_ENV, REPORT_URL_ENV
from ..session.spec import RUNS_FOLDER, UPLOAD_FOLDER, SessionSpec
from ..spawner import script, slurm
from ..spawner.options import SessionRequest
from ..spawner.reports import new_report_secret

log = logging.getLogger(__name__)

# The hub records what its runs' jobs report and what Slurm says as this admin actor.
HUB_ACTOR = "jupyterhub-runs"
TAG_PREFIX = "securehpc-run"
# A run still "submitting" this long after it was recorded, and not being submitted by this hub process, was
# left by a hub that stopped in the middle: its job is looked for by its tag.
SUBMIT_GRACE = 120.0
# ``run show`` asks Slurm about an active run at most this often (the poller asks every poll_interval).
REFRESH_AGE = 3.0
_SCONTROL_FIELD = re.compile(r"(\w+)=(\S*)")


class RunNotSubmitted(RuntimeError):
    """The run was recorded, but its job could not be submitted; the run has ended as failed, and says why."""


class RunStartLater(RuntimeError):
    """The hub cannot answer the run's job yet (its job id is not recorded, Slurm did not answer); nothing was
    claimed: the job asks again."""


class RunNotStarted(RuntimeError):
    """The run's job asked for its key and may not have one (its person was removed, the policy changed, the key
    server failed): the run has ended as failed, and says why."""


def run_tag(run_id: str) -> str:
    """The ``--comment`` that ties a Slurm job to its run, for reconciliation after a hub restart."""
    return f"{TAG_PREFIX}:{run_id}"


def _spawner_setting(config: object, name: str) -> object:
    """A SecureSlurmSpawner setting as the site configured it, or its default: runs use the sessions' values."""
    from ..spawner.spawner import SecureSlurmSpawner

    section = config.get("SecureSlurmSpawner", {}) if hasattr(config, "get") else {}
    if name in section:
        return section[name]
    return SecureSlurmSpawner.class_traits()[name].default()


class SecureRuns(Configurable):
    """Headless notebook runs that the hub submits (settings beside SecureSlurmSpawner's, whose values they share)."""

    poll_interval = Float(
        30.0,
        help="""Seconds between the hub's questions to Slurm (one ``scontrol show job`` per queued or running run).
        Runs report their progress and end themselves; this finds the ends they cannot report (time limit, a
        cancel in Slurm, a failed node) and marks runs ``unknown`` while Slurm does not answer.""",
    ).tag(config=True)

    stage_limit_mib = Integer(
        0,
        help="""Like SecureSlurmSpawner.stage_limit_mib, for runs. 0 (the default): datasets are read through their
        mounts, which is faster for a run that reads its data once (see the README's benchmarks).""",
    ).tag(config=True)

    prefetch_datasets = Bool(
        False,
        help="""Like SecureSlurmSpawner.prefetch_datasets, for runs: off by default, a run reads its data at once.""",
    ).tag(config=True)

    job_output = Unicode(
        help="""Slurm ``--output`` of run jobs (the launcher's messages only; removed after a run that succeeded).
        Default: SecureSlurmSpawner.job_output.""",
    ).tag(config=True)

    @default("job_output")
    def _job_output_default(self) -> str:
        return str(_spawner_setting(self.config, "job_output"))

    @validate("job_output")
    def _check_job_output(self, proposal: dict) -> str:
        return script.check_job_output(proposal["value"], "SecureRuns.job_output")


class RunManager:
    """The hub's runs: one per hub process (``runs/api.py`` keeps it in the application's settings)."""

    def __init__(self, config: object, hub_api_url: str) -> None:
        self.config = config
        self.settings = SecureRuns(config=config)
        self.site = SecureHPC(config=config)
        self.hub_api_url = hub_api_url.rstrip("/")
        self._database = open_database(self.site.db_url)
        self._submitting: set[str] = set()
        # Uploaded notebooks of runs whose jobs have not started yet: in this process's memory only (never in the
        # database, on the hub's disk or in Slurm); a hub restart meanwhile ends such a run at its start.
        self._uploads: dict[str, tuple[str, float]] = {}
        self._refreshed: dict[str, float] = {}
        self._poller: asyncio.Task | None = None

    # --- the one door, as a person or as the hub -------------------------------------------------------
    def _service(self, actor: Actor) -> ProjectService:
        return ProjectService(
            sessions=self._database,
            keys=KeyStore(KeyStoreConfig(config=self.config)),
            audit=AuditLog(Path(self.site.audit_log)),
            store_root=Path(self.site.store_root),
            actor=actor,
        )

    def as_person(self, user: str) -> ProjectService:
        return self._service(Actor.signed_in(user, is_admin=False, via="hub-runs"))

    def as_hub(self) -> ProjectService:
        return self._service(Actor(admin=HUB_ACTOR))

    def setting(self, name: str) -> object:
        return _spawner_setting(self.config, name)

    # --- submit ---------------------------------------------------------------------------------------
    async def submit(self, user: str, data: dict) -> RunRecord:
        """Record and submit a run of ``user``; refusals raise before anything is submitted. No key is wrapped
        and nothing of the run (notebook, parameters, upload) goes into the job: it asks for them when it
        starts (``start``)."""
        self.ensure_poller()
        secret, secret_hash = new_report_secret()
        record = await asyncio.to_thread(self.as_person(user).submit_run, data, report_hash=secret_hash)
        self._submitting.add(record.run_id)
        if record.upload is not None:
            self._uploads[record.run_id] = (record.upload, time.monotonic())
        try:
            job = await asyncio.to_thread(self.as_hub().run_job, record.run_id)
            batch, env, account = self._job(record, job)
            env[REPORT_TOKEN_ENV] = secret
            job_id = await slurm.submit(batch, account=account, env=env, timeout=float(self.setting("command_timeout")))
        except Exception as error:  # whatever stopped it (no principal, Slurm): the run ends, saying why
            reason = str(error).splitlines()[0][:300] if str(error) else type(error).__name__
            self._uploads.pop(record.run_id, None)
            ended = await asyncio.to_thread(self.as_hub().run_not_submitted, record.run_id, reason)
            raise RunNotSubmitted(f"run {record.run_id}: {ended.reason}") from None
        finally:
            self._submitting.discard(record.run_id)
        log.info("submitted run %s of %s in %s as job %s", record.run_id, user, record.project, job_id)
        return await asyncio.to_thread(self.as_hub().run_submitted, record.run_id, job_id)

    def _job(self, record: RunRecord, job: RunJob) -> tuple[str, dict[str, str], slurm.JobAccount]:
        """The batch script, sbatch's environment and the account of ``record``'s job: its tag and resources,
        the report URL and secret, nothing of the run itself and no key."""
        # The account of the person's principal in the project: the spec the job gets at its start names the
        # same principal (session_grant decides it from the same database), and the launcher refuses to start
        # under any other, as for a session.
        account = slurm.job_account(job)  # type: ignore[arg-type] - RunJob has the fields a grant lends it
        output = self.settings.job_output.replace(script.NONCE, secrets.token_hex(8))
        settings = script.JobSettings(str(self.setting("node_command")), output,
                                      tuple(self.setting("extra_sbatch_options") or ()))  # fmt: skip
        request = SessionRequest(record.project, **record.resources)
        batch = script.render(request, job.policy, tag=run_tag(record.run_id), settings=settings, mode="run",
                              run_id=record.run_id)  # fmt: skip
        env = {**slurm.slurm_env(), REPORT_URL_ENV: f"{self.hub_api_url}/securehpc/runs/{record.run_id}"}
        if os.environ.get(HUB_PUBLIC_KEY_ENV):
            env[HUB_PUBLIC_KEY_ENV] = os.environ[HUB_PUBLIC_KEY_ENV]
        return batch, env, account

    # --- start: the job's one question ------------------------------------------------------------------
    async def start(self, run_id: str) -> tuple[str, str]:
        """The signed spec and the wrapped key of a run whose job has started (the caller checked the run's
        report secret): once, while Slurm shows the job running; membership and policy decided now
        (``session_grant``, audited ``key.wrap``), so the key's ``key_ttl`` counts from here. ``RunStartLater``
        when the hub cannot decide yet (nothing claimed); ``Refused`` (audited) when it may not start."""
        hub = self.as_hub()
        record = await asyncio.to_thread(hub.hub_run, run_id)
        if record is None or record.state == "submitting" or not record.job_id:
            raise RunStartLater(f"the hub has not recorded run {run_id}'s job yet: ask again in a moment")
        try:
            timeout = float(self.setting("command_timeout"))
            text = await slurm.run_command(["scontrol", "--oneliner", "show", "job", record.job_id],
                                           env=slurm.slurm_env(), timeout=timeout)  # fmt: skip
        except slurm.SlurmError as error:
            if "Invalid job id" not in str(error):
                raise RunStartLater(f"Slurm did not answer about job {record.job_id}: ask again") from None
            text = ""
        fields = dict(_SCONTROL_FIELD.findall(text))
        tag_ok = fields.get("Comment") == run_tag(run_id)
        claimed = await asyncio.to_thread(hub.claim_run_start, run_id, fields.get("JobState") if tag_ok else None)
        grant = None
        try:
            if claimed.notebook.startswith(f"{RUNS_FOLDER}/{run_id}/{UPLOAD_FOLDER}/"):
                upload, _ = self._uploads.get(run_id, (None, 0.0))
                if upload is None:
                    raise RuntimeError("the hub restarted while the run waited: its uploaded notebook (kept in the "
                                       "hub's memory only) is gone; submit the run again")  # fmt: skip
                claimed = dataclasses.replace(claimed, upload=upload)
            grant = await asyncio.to_thread(hub.session_grant, claimed.project, claimed.user)
            signed = self._signed_spec(claimed, grant)
        except Exception as error:  # refused now (removed, policy), OpenBao, no upload: the run ends, saying why
            reason = str(error).splitlines()[0][:300] if str(error) else type(error).__name__
            if grant is not None:
                self._revoke(grant)
            self._uploads.pop(run_id, None)
            ended = await asyncio.to_thread(hub.run_not_started, run_id, reason)
            raise RunNotStarted(ended.reason or reason) from None
        self._uploads.pop(run_id, None)
        log.info("gave run %s (job %s) its spec and key", run_id, claimed.job_id)
        return signed, grant.wrapped.token

    def _signed_spec(self, record: RunRecord, grant: object) -> str:
        """The session spec of ``record``'s run under ``grant``, with the run spec inside, signed."""
        keys = KeyStoreConfig(config=self.config)
        spec = SessionSpec(
            project=record.project,
            user=grant.user,
            principal=grant.principal,
            role=grant.role,
            store_root=Path(self.site.store_root),
            vault_addr=keys.url,
            datasets=grant.mounted_datasets,
            issued_at=time.time(),
            ttl=grant.ttl,
            key_store={"kv_mount": keys.kv_mount, "prefix": keys.prefix, "policy_prefix": keys.policy_prefix},
            stage_limit_mib=self.settings.stage_limit_mib,
            prefetch=self.settings.prefetch_datasets,
            policy=grant.policy,
            run=record.spec,
        )
        return jobspec.sign(spec, jobspec.load_private_key(Path(str(self.setting("signing_key_file")))))

    def _revoke(self, grant: object) -> None:
        try:
            wrapped = grant.wrapped
            KeyStore(KeyStoreConfig(config=self.config)).revoke_wrapping(
                wrapped.accessor, wrapped_accessor=wrapped.wrapped_accessor
            )
        except Exception as error:  # the token expires with its TTL anyway
            log.warning("could not revoke the key of a run that did not start: %s", error)

    # --- cancel ---------------------------------------------------------------------------------------
    async def cancel(self, user: str, run_id: str) -> RunRecord:
        """``scancel`` the run's job (the sandbox, its processes and mounts go with it), then record it."""
        self.ensure_poller()
        record = await asyncio.to_thread(self.as_person(user).check_cancel, run_id)
        await slurm.run_command(["scancel", record.job_id], env=slurm.slurm_env(),
                                timeout=float(self.setting("command_timeout")))  # fmt: skip
        return await asyncio.to_thread(self.as_person(user).record_cancel, run_id)

    # --- following Slurm ------------------------------------------------------------------------------
    def ensure_poller(self) -> None:
        """Start the poller in this hub process, once (handlers call this; after a hub restart the first request,
        a run's report included, starts it)."""
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll_forever())

    async def _poll_forever(self) -> None:
        while True:
            try:
                records = await asyncio.to_thread(self.as_hub().active_runs)
                active, now = {record.run_id for record in records}, time.monotonic()
                for run_id, (_, added) in list(self._uploads.items()):
                    if run_id not in active and now - added > SUBMIT_GRACE:  # ended before its job started
                        self._uploads.pop(run_id, None)
                await self.refresh(records)
            except Exception:  # the poller must outlive one bad round (database busy, Slurm odd)
                log.exception("checking the runs' jobs failed; trying again in %.0fs", self.settings.poll_interval)
            await asyncio.sleep(self.settings.poll_interval)

    async def refresh(self, records: list[RunRecord], *, max_age: float = 0.0) -> None:
        """Ask Slurm about each active run among ``records`` (not asked within ``max_age`` seconds)."""
        now = time.monotonic()
        for record in records:
            if not record.active or now - self._refreshed.get(record.run_id, float("-inf")) < max_age:
                continue
            self._refreshed[record.run_id] = now
            if record.state == "submitting":
                await self._reconcile_submitting(record)
            elif record.job_id:
                await self._ask_slurm(record)

    async def _ask_slurm(self, record: RunRecord) -> None:
        timeout = float(self.setting("command_timeout"))
        try:
            text = await slurm.run_command(["scontrol", "--oneliner", "show", "job", record.job_id],
                                           env=slurm.slurm_env(), timeout=timeout)  # fmt: skip
        except slurm.SlurmError as error:
            if "Invalid job id" in str(error):
                await asyncio.to_thread(self.as_hub().record_slurm_state, record.run_id, None)
            else:
                await asyncio.to_thread(self.as_hub().record_slurm_unknown, record.run_id, str(error)[:300])
            return
        fields = dict(_SCONTROL_FIELD.findall(text))
        detail = f"exit code {fields.get('ExitCode', '?')}, reason {fields.get('Reason', '?')}"
        await asyncio.to_thread(self.as_hub().record_slurm_state, record.run_id, fields.get("JobState"), detail)

    async def _reconcile_submitting(self, record: RunRecord) -> None:
        """A run left "submitting" by a hub that stopped mid-way: adopt its job if sbatch had taken it, else end
        it as not submitted (never submit it again: the user decides)."""
        created = record.created_at.replace(tzinfo=dt.timezone.utc).timestamp()
        if record.run_id in self._submitting or time.time() - created < SUBMIT_GRACE:
            return
        timeout = float(self.setting("command_timeout"))
        try:
            listing = await slurm.run_command(["squeue", "--noheader", "--states=all", "--format=%i|%k"],
                                              env=slurm.slurm_env(), timeout=timeout)  # fmt: skip
        except slurm.SlurmError as error:
            log.warning("cannot look for the job of run %s yet: %s", record.run_id, error)
            return
        for line in listing.splitlines():
            job_id, _, comment = line.partition("|")
            if comment.strip() == run_tag(record.run_id):
                await asyncio.to_thread(self.as_hub().run_submitted, record.run_id, job_id.strip())
                return
        await asyncio.to_thread(self.as_hub().run_not_submitted, record.run_id,
                                "the hub stopped while submitting it; submit it again")  # fmt: skip
