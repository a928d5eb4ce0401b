"""``SecureSlurmSpawner.start``, ``poll`` and ``stop`` against stub Slurm commands, without root or a cluster.

Real pieces: the spawner, the projects database (SQLite in a temporary folder, through ``ProjectService``),
the audit log, the hub's signing key (``jobspec.generate_key``), JupyterHub's own user and spawner objects.
Stubs: ``sbatch``, ``squeue``, ``scancel`` and ``scontrol`` (``conftest.py``), which record how they were
called and answer as Slurm would. Stand-in: ``OpenBaoStandIn`` below replaces the OpenBao key store (it hands
out a made-up wrapped token and records revocations). The real OpenBao path (wrapping, unwrapping on the node,
revocation) is covered by tests/spawner/test_hub_reports.py, tests/e2e/test_e2e_spawn.py and
tests/projects/test_project_sessions.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import secrets
from datetime import datetime, timezone
from pathlib import Path

import pytest
from jupyterhub import orm
from jupyterhub.objects import Hub
from jupyterhub.user import User
from traitlets.config import Config

from jupyter_securehpc import jobspec
from jupyter_securehpc.audit import AuditLog
from jupyter_securehpc.keys import WrappedSession
from jupyter_securehpc.principals import DEFAULT_PREFIX, PrincipalAccount, principal_name
from jupyter_securehpc.projects.db import open_database
from jupyter_securehpc.projects.model import Dataset, Member, Project
from jupyter_securehpc.projects.service import Actor, ProjectService
from jupyter_securehpc.session.env import REPORT_TOKEN_ENV, REPORT_URL_ENV, WRAPPED_TOKEN_ENV
from jupyter_securehpc.spawner import slurm as slurm_module
from jupyter_securehpc.spawner import spawner as spawner_module
from jupyter_securehpc.spawner.reports import report_secret_hash
from jupyter_securehpc.spawner.script import SPEC_END
from jupyter_securehpc.spawner.spawner import SecureSlurmSpawner, SpawnFailed, SpawnRefused
from jupyter_securehpc.vocabulary import name_key

PROJECT = "sleep"
# sbatch --uid needs a real account: the one running the tests (nobody, a contributor, or root in CI).
USER = pwd.getpwuid(os.getuid()).pw_name


class OpenBaoStandIn:
    """Stand-in for ``KeyStore`` (OpenBao): the calls the service and the spawner make, with made-up tokens."""

    def __init__(self) -> None:
        self.wrapped: list[WrappedSession] = []
        self.wrap_calls: list[tuple] = []
        self.revoked: list[tuple[str, str | None]] = []

    def wrap_session(self, user: str, project: str, ttl: int, datasets=()) -> WrappedSession:
        self.wrap_calls.append((user, project, ttl, tuple(str(ref) for ref in datasets)))
        session = WrappedSession(
            token=f"hvs.stand-in-{secrets.token_hex(16)}",
            accessor=f"wrap-{secrets.token_hex(4)}",
            wrapped_accessor=f"session-{secrets.token_hex(4)}",
            creation_path="auth/token/create/stand-in",
            creation_time=datetime.now(timezone.utc),
            ttl=ttl,
        )
        self.wrapped.append(session)
        return session

    def revoke_wrapping(self, accessor: str, *, wrapped_accessor: str | None = None) -> bool:
        self.revoked.append((accessor, wrapped_accessor))
        return True


class Site:
    """One hub's worth of local state in ``root``: database, audit log, stores folder, signing key."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.db_url = f"sqlite:///{root / 'securehpc.sqlite'}"
        self.audit_log = root / "audit.jsonl"
        self.store_root = root / "stores"
        self.store_root.mkdir()
        self.signing_key = root / "hub-signing.pem"
        self.public_key = jobspec.generate_key(self.signing_key).public_key()
        self.keys = OpenBaoStandIn()
        self.service = ProjectService(
            sessions=open_database(self.db_url),
            keys=self.keys,
            audit=AuditLog(self.audit_log),
            store_root=self.store_root,
            actor=Actor(admin="test-admin"),
        )

    def config(self) -> Config:
        config = Config()
        config.SecureHPC.db_url = self.db_url
        config.SecureHPC.audit_log = str(self.audit_log)
        config.SecureHPC.store_root = str(self.store_root)
        config.KeyStoreConfig.url = "http://127.0.0.1:8200"
        config.SecureSlurmSpawner.signing_key_file = str(self.signing_key)
        config.SecureSlurmSpawner.node_command = "/opt/securehpc/bin/securehpc-node"
        config.SecureSlurmSpawner.extra_sbatch_options = ["--account=secure"]
        config.SecureSlurmSpawner.startup_poll_interval = 0.05
        return config

    def audit_events(self) -> list[dict]:
        return [json.loads(line) for line in self.audit_log.read_text().splitlines()]


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Site:
    site = Site(tmp_path)
    # The project row and its owner as create_project leaves them (without its gocryptfs store, which is not
    # what these tests are about), and one dataset; the member and the policy go through the service.
    with site.service.sessions() as session, session.begin():
        project = Project(name=PROJECT, name_key=name_key(PROJECT), created_by="test-admin", policy={})
        session.add(project)
        session.add(Member(project=project, username="olivia", role="data_owner", added_by="test-admin"))
        session.add(
            Dataset(
                project=project, name="eeg", name_key=name_key("eeg"), created_by="olivia", manifest_sha256="0" * 64
            )
        )
    site.service.add_member(PROJECT, USER, "data_scientist")
    site.service.set_policy(PROJECT, ["max_gpus=2", "max_cpus=8", "max_memory_gb=32", "max_wall_time=8h"])
    # The spawner opens its key store (and its database once per process) itself: both come from this site.
    monkeypatch.setattr(spawner_module, "KeyStore", lambda config=None: site.keys)
    # The principal the grant names is only recorded (this tier cannot make accounts); its check on the hub host
    # (slurm.job_account) stands it in with the account running the tests, whose ids sbatch receives.
    monkeypatch.setattr(
        slurm_module, "check_principal", lambda name, group: PrincipalAccount(name, os.getuid(), os.getgid(), group)
    )
    monkeypatch.setattr(SecureSlurmSpawner, "_sessions", None)
    return site


def new_spawner(site: Site, user_options: dict | None = None) -> SecureSlurmSpawner:
    """A spawner for the named server ``PROJECT`` of ``USER``, made as JupyterHub makes it."""
    db = orm.new_session_factory("sqlite://")()
    orm_user = orm.User(name=USER)
    db.add(orm_user)
    db.commit()
    orm_spawner = orm.Spawner(user=orm_user, name=PROJECT)
    db.add(orm_spawner)
    db.commit()
    user = User(orm_user, {"config": site.config()})
    spawner = user._new_spawner(
        PROJECT, spawner_class=SecureSlurmSpawner, hub=Hub(), config=site.config(), orm_spawner=orm_spawner
    )
    spawner.user_options = user_options if user_options is not None else {"project": PROJECT, "gpus": "2"}
    return spawner


async def start_and_report_port(spawner: SecureSlurmSpawner, port: int = 40123) -> tuple[str, int]:
    """``start``, with the job's port report (api.py calls ``report_port``) once the job is submitted."""

    async def job() -> None:
        while not spawner.job_id:
            await asyncio.sleep(0.01)
        spawner.report_port(port)

    reporter = asyncio.create_task(job())
    try:
        return await asyncio.wait_for(spawner.start(), 20)
    finally:
        reporter.cancel()


def test_start_submits_the_policy_script_with_secrets_only_in_the_environment(site, slurm):
    spawner = new_spawner(site)
    ip, port = asyncio.run(start_and_report_port(spawner))

    assert (ip, port) == ("127.0.0.7", 40123)  # the node's NodeAddr from scontrol, the reported port
    assert spawner.job_id == "4242"
    [submit] = slurm.calls("sbatch")
    account = pwd.getpwnam(USER)
    assert submit["argv"][1:] == ["--parsable", f"--uid={account.pw_uid}", f"--gid={account.pw_gid}"]

    # The batch script: the options the policy allowed, the job tag, the configured extras, the signed spec.
    script = submit["stdin"]
    sbatch_lines = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    tag = f"securehpc:{USER}:{PROJECT}:{spawner.orm_spawner.id}"
    # CPUs and memory not asked for: one CPU and its share of the policy's memory (32 GB / 8 CPUs).
    for expected in (f"--comment={tag}", "--gres=gpu:2", "--cpus-per-task=1", "--mem=4G", "--time=480"):
        assert f"#SBATCH {expected}" in sbatch_lines
    assert "#SBATCH --account=secure" in sbatch_lines
    assert "/opt/securehpc/bin/securehpc-node" in script

    # The session token was wrapped once, for this user, project and its dataset, for the policy's key_ttl.
    [wrapped] = site.keys.wrapped
    key_ttl = site.service.startable_projects(USER)[PROJECT].key_ttl
    assert site.keys.wrap_calls == [(USER, PROJECT, key_ttl, (f"{PROJECT}/eeg",))]

    # The secrets: only in sbatch's environment, never in its argv or the script.
    env = submit["env"]
    report_secret = env[REPORT_TOKEN_ENV]
    assert env[WRAPPED_TOKEN_ENV] == wrapped.token
    assert spawner.report_secret_hash == report_secret_hash(report_secret)
    assert env[REPORT_URL_ENV].endswith(f"/securehpc/servers/{USER}/{PROJECT}")
    assert env["SLURM_UMASK"] == "0077"
    for secret in (wrapped.token, report_secret):
        assert secret not in script
        for call in slurm.calls():  # no command line holds a secret; only sbatch's environment does
            assert secret not in " ".join(call["argv"])
            assert call == submit or secret not in json.dumps(call["env"])
    assert "JUPYTERHUB_ACTIVITY_URL" not in env

    # Before submitting, the spawner looked for jobs of an interrupted spawn of this server (none here).
    [listing] = slurm.calls("squeue")[:1]
    assert f"--user={principal_name(DEFAULT_PREFIX, PROJECT, USER)}" in listing["argv"]
    assert not slurm.calls("scancel")

    # The hub keeps accessors and the report secret's hash, never a token, in the server's state.
    state = spawner.get_state()
    assert state["securehpc_accessors"] == [wrapped.accessor, wrapped.wrapped_accessor]
    assert wrapped.token not in json.dumps(state) and report_secret not in json.dumps(state)

    actions = [(e["action"], e["outcome"]) for e in site.audit_events()]
    assert ("key.wrap", "allowed") in actions and ("session.start", "allowed") in actions
    # The job runs as the person's principal, which the spec names and the start event records with the person.
    principal = principal_name(DEFAULT_PREFIX, PROJECT, USER)
    [started] = [e for e in site.audit_events() if (e["action"], e["outcome"]) == ("session.start", "allowed")]
    assert started["actor"] == USER and started["details"]["principal"] == principal
    assert f'"principal": "{principal}"' in script


def test_the_signed_spec_in_the_script_verifies_with_the_hub_key(site, slurm):
    spawner = new_spawner(site)
    asyncio.run(start_and_report_port(spawner))
    script = slurm.calls("sbatch")[0]["stdin"]
    signed = script.split(f"<<'{SPEC_END}'\n", 1)[1].split("\n", 1)[0]
    spec = jobspec.verify_session_spec(signed, site.public_key)
    assert (spec.project, spec.user, spec.role.value) == (PROJECT, USER, "data_scientist")
    assert [f"{owner}/{name}" for owner, name in spec.datasets] == [f"{PROJECT}/eeg"]


def running_spawner(site: Site) -> SecureSlurmSpawner:
    """A spawner as the hub reloads it after a restart: job 4242 submitted, tokens to revoke in its state."""
    spawner = new_spawner(site)
    spawner.load_state(
        {
            "job_id": "4242",
            "job_status": "RUNNING node7",
            "securehpc_accessors": ["wrap-accessor", "session-accessor"],
            "securehpc_report_hash": "0" * 64,
        }
    )
    return spawner


@pytest.mark.parametrize(
    ("squeue", "expected"),
    [
        ({"out": "RUNNING node7\n"}, None),
        ({"out": "COMPLETING node7\n"}, None),
        ({"out": "PENDING \n"}, None),
        ({"out": "CONFIGURING node7\n"}, None),
        ({"out": ""}, 1),  # no longer listed: ended
        ({"out": "COMPLETED node7\n"}, 1),
        ({"err": "slurm_load_jobs error: Invalid job id specified\n", "rc": 1}, 1),  # forgotten by Slurm
        # slurmctld briefly unreachable: not known to be dead, so the server is kept.
        ({"err": "slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n", "rc": 1}, None),
    ],
)
def test_poll_maps_squeue_states(site, slurm, squeue, expected):
    slurm.answer("squeue", **squeue)
    spawner = running_spawner(site)
    assert asyncio.run(spawner.poll()) == expected
    [query] = slurm.calls("squeue")
    assert query["argv"][1:] == ["--noheader", "--jobs=4242", "--format=%T %B"]
    if expected == 1:
        assert spawner.job_id == ""  # the state is cleared: JupyterHub sees a stopped server


def test_stop_cancels_the_job_and_revokes_the_session_tokens(site, slurm):
    spawner = new_spawner(site)
    asyncio.run(start_and_report_port(spawner))
    [wrapped] = site.keys.wrapped
    slurm.answer("squeue", out="")  # after scancel the job is gone

    asyncio.run(spawner.stop())

    assert [call["argv"][1:] for call in slurm.calls("scancel")] == [["4242"]]
    assert site.keys.revoked == [(wrapped.accessor, wrapped.wrapped_accessor)]
    assert spawner.report_secret_hash is None  # the job's reports are refused from now on
    assert ("session.stop", "allowed") in [(e["action"], e["outcome"]) for e in site.audit_events()]


def test_stop_after_a_hub_restart_revokes_the_tokens_from_the_state(site, slurm):
    spawner = running_spawner(site)
    slurm.answer("squeue", out="")
    asyncio.run(spawner.stop(now=True))
    assert [call["argv"][1:] for call in slurm.calls("scancel")] == [["4242"]]
    assert site.keys.revoked == [("wrap-accessor", "session-accessor")]


def test_only_sbatch_gets_a_standard_input_the_others_read_dev_null(site, slurm):
    # The stubs read their standard input to the end: one left open would hang until command_timeout.
    spawner = new_spawner(site)
    spawner.command_timeout = 5
    tag = f"securehpc:{USER}:{PROJECT}:{spawner.orm_spawner.id}"
    slurm.answer("squeue-user", out=f"4100|{tag}\n")  # an interrupted spawn's job: scancel too
    asyncio.run(start_and_report_port(spawner))
    assert asyncio.run(spawner.poll()) is None
    slurm.answer("squeue", out="")
    asyncio.run(spawner.stop())

    called = {Path(call["argv"][0]).name for call in slurm.calls()}
    assert called == {"sbatch", "squeue", "scancel", "scontrol"}
    for call in slurm.calls():
        if Path(call["argv"][0]).name == "sbatch":
            assert not call["stdin_devnull"] and SPEC_END in call["stdin"]
        else:
            assert call["stdin_devnull"] and call["stdin"] == "", call["argv"]


def test_start_cancels_the_job_of_an_interrupted_spawn_of_the_same_server(site, slurm):
    spawner = new_spawner(site)
    tag = f"securehpc:{USER}:{PROJECT}:{spawner.orm_spawner.id}"
    slurm.answer("squeue-user", out=f"4100|{tag}\n4101|securehpc:{USER}:other:99\n")
    asyncio.run(start_and_report_port(spawner))
    assert [call["argv"][1:] for call in slurm.calls("scancel")] == [["4100"]]


@pytest.mark.parametrize(
    ("user_options", "message"),
    [
        ({"project": PROJECT, "gpus": "3"}, "from 0 to 2"),
        ({"project": PROJECT, "gpus": "1\n#SBATCH --uid=0"}, "whole number"),
        ({"project": PROJECT, "partition": "all"}, "unknown spawn options 'partition'"),
        ({"project": "cardio"}, "not a member of project 'cardio'"),
    ],
)
def test_a_refused_option_submits_nothing(site, slurm, user_options, message):
    spawner = new_spawner(site, user_options)
    with pytest.raises(SpawnRefused) as refused:
        asyncio.run(spawner.start())
    assert message in refused.value.jupyterhub_message
    assert refused.value.status_code == 400  # the REST API answers 400 with the message, not 500
    assert slurm.calls() == []  # not even squeue: refused before Slurm is asked anything
    assert site.keys.wrap_calls == []  # and no session token was made
    assert ("session.start", "denied") in [(e["action"], e["outcome"]) for e in site.audit_events()]


def test_a_waiting_jobs_slurm_reason_is_shown_in_words(site, slurm):
    slurm.answer("squeue", out="PENDING n/a\n")
    slurm.answer("squeue-reason", out="Resources\n")
    spawner = new_spawner(site)

    async def scenario() -> list[str]:
        start = asyncio.create_task(spawner.start())
        while not any("waiting:" in event["message"] for event in getattr(spawner, "_progress_events", [])):
            await asyncio.sleep(0.05)
        slurm.answer("squeue", out="RUNNING node7\n")  # the other job ended: this one runs
        spawner.report_port(40123)
        await asyncio.wait_for(start, 20)
        return [event["message"] for event in spawner._progress_events]

    messages = asyncio.run(asyncio.wait_for(scenario(), 30))
    waiting = [message for message in messages if "waiting:" in message]
    # Once, however often the job was polled while it waited; in words, with the policy's partition.
    assert waiting == [
        "Job 4242 is waiting: all CPUs, memory or GPUs of the gpu partition that this session asks for are in use "
        "by other jobs; it starts when they end (or ask for fewer CPUs, less memory or fewer GPUs)"
    ]
    assert messages.index(waiting[0]) < len(messages) - 1  # and the start went on from there


def test_a_job_that_ends_before_its_port_report_fails_the_start(site, slurm):
    slurm.answer("squeue", out="")  # gone at the first look
    slurm.answer("scontrol", out="JobId=4242 JobState=FAILED ExitCode=1:0 StdOut=/nonexistent/out.log\n")
    spawner = new_spawner(site)
    with pytest.raises(SpawnFailed) as failed:
        asyncio.run(asyncio.wait_for(spawner.start(), 20))
    assert "job 4242 FAILED, exit code 1:0" in failed.value.jupyterhub_message
    assert ("session.start", "failed") in [(e["action"], e["outcome"]) for e in site.audit_events()]
