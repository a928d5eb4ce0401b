"""The hub's Slurm commands, for sessions (``spawner.py``) and headless runs (``runs/``) alike.

Commands run as argument lists with a timeout, never through a shell; their environment is built here (PATH and
SLURM_CONF only, plus what the caller adds for the job), never the hub's. ``job_account`` is the one place that
says which Unix account a project's job runs as (the person's principal in the project, from the grant), and
``submit`` the one place that hands a batch script to ``sbatch --uid``: a session and a run of the same grant
always run as the same account.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..principals import AccountError, InvalidAccountName, check_principal

if TYPE_CHECKING:
    from ..projects.service import SessionGrant

# The job's output is created by Slurm with this umask (sbatch reads it from its environment, SLURM_UMASK): the
# launcher's messages are the account's business only.
JOB_UMASK = 0o077


class SlurmError(RuntimeError):
    """A Slurm command failed or did not answer; the message names the command and Slurm's own words."""


async def run_command(
    argv: list[str], *, timeout: float, stdin: str | None = None, env: dict[str, str] | None = None
) -> str:
    """Run one Slurm command; its standard output, stripped. SlurmError when it fails or takes too long."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        # Only sbatch reads a batch script there; the others get /dev/null, never the hub's own standard input.
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        # sbatch hands its umask to the job (unless SLURM_UMASK says otherwise): the job output is private.
        umask=JOB_UMASK,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(stdin.encode() if stdin is not None else None), timeout)
    except asyncio.TimeoutError:
        process.kill()
        await process.wait()
        raise SlurmError(f"{argv[0]} did not answer within {timeout:g}s") from None
    if process.returncode != 0:
        raise SlurmError(f"{argv[0]} failed: {err.decode(errors='replace').strip()[:500]}")
    return out.decode(errors="replace").strip()


def slurm_env() -> dict[str, str]:
    """The environment of Slurm's client commands: where they are and which cluster, nothing of the hub's."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    if "SLURM_CONF" in os.environ:
        env["SLURM_CONF"] = os.environ["SLURM_CONF"]
    return env


@dataclass(frozen=True)
class JobAccount:
    """The Unix account a job runs as (``sbatch --uid/--gid``)."""

    name: str
    uid: int
    gid: int
    home: str = "/nonexistent"
    shell: str = "/usr/sbin/nologin"


def job_account(grant: SessionGrant) -> JobAccount:
    """The account that a session or a headless run of ``grant`` (``ProjectService.session_grant``) runs as.

    The person's principal in the project (``grant.principal``, from the projects database; never the person's
    own login account), checked on this host: it exists, its primary group is the project's group, nobody can
    log in as it, and the group has no other members (``principals.check_principal``). Chosen here from the
    grant, never from a request, so that sessions and runs of one grant always run as the same account."""
    try:
        account = check_principal(grant.principal, grant.group)
    except (AccountError, InvalidAccountName) as error:
        raise SlurmError(f"cannot run {grant.user}'s job in {grant.project}: {error}") from None
    return JobAccount(account.name, account.uid, account.gid, account.home, account.shell)


async def submit(batch: str, *, account: JobAccount, env: dict[str, str], timeout: float) -> str:
    """``sbatch`` the batch script as ``account``; the job id. Secrets travel in ``env`` only (never argv)."""
    argv = ["sbatch", "--parsable", f"--uid={account.uid}", f"--gid={account.gid}"]
    env = {**env, "SLURM_UMASK": f"{JOB_UMASK:04o}"}
    return (await run_command(argv, stdin=batch, env=env, timeout=timeout)).split(";")[0]
