"""The Slurm batch script of a secure session or a headless run: rendered only from validated values, never
user text.

Every ``#SBATCH`` line comes from an int or a name that passed ``vocabulary.names``; every value that
reaches the shell is quoted with ``shlex.quote`` all the same. A session's signed job spec travels inside the
script as a quoted here-document (one line of JSON, which cannot contain the terminator line); its wrapped
token is not in the script: it reaches the job through sbatch's environment. A headless run's script holds
neither: Slurm keeps batch scripts on its controller, so the run's spec (notebook, parameter values, an
uploaded notebook) and its key are asked from the hub by the launcher when the job starts
(``securehpc-node run --from-hub``); the script carries the tag and the resources only.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from ..projects.policy import Policy
from ..session.spec import SPEC_END
from .options import SessionRequest

TAG_PREFIX = "securehpc"


@dataclass(frozen=True)
class JobSettings:
    """What the admin configures for every job (SecureSlurmSpawner traits), for one start: ``output`` is
    ``job_output`` with its ``{nonce}`` already filled (the spawner does it, with fresh random hex)."""

    node_command: str = "securehpc-node"
    output: str = "/tmp/securehpc-%u-%j-0.log"  # noqa: S108 - on the node, the user's own file (mode 0600)
    extra_sbatch: tuple[str, ...] = ()


def job_tag(user: str, project: str, server_id: str) -> str:
    """The ``--comment`` that ties a job to its server, for reconciliation after a hub restart."""
    return f"{TAG_PREFIX}:{user}:{project}:{server_id}"


NONCE = "{nonce}"
_JOB_OUTPUT = re.compile(r"/[A-Za-z0-9_.%@+/-]*")
_RUN_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")


def check_job_output(value: str, setting: str) -> str:
    """``value`` if it is a usable job output pattern (``setting`` names the option in the message)."""
    rest = value.replace(NONCE, "", 1)
    if value.count(NONCE) != 1 or not _JOB_OUTPUT.fullmatch(rest) or "/../" in rest + "/":
        raise ValueError(
            f"{setting}: {value!r} must be an absolute path on the node, without spaces or "
            f"'..', with exactly one {NONCE} (filled with random hex at each start, so that no job's output "
            f"replaces another's), e.g. '/tmp/securehpc-%u-%j-{NONCE}.log'"
        )
    return value


def render(
    request: SessionRequest,
    policy: Policy,
    *,
    tag: str,
    settings: JobSettings,
    signed_spec: str | None = None,
    mode: str = "serve",
    run_id: str | None = None,
) -> str:
    """The batch script of a session (``mode="serve"``, with its ``signed_spec``) or of the headless run
    ``run_id`` (``mode="run"``, without a spec: the launcher asks the hub for it when the job starts)."""
    if mode not in ("serve", "run"):
        raise ValueError(f"unknown job mode {mode!r}")
    if (signed_spec is None) != (mode == "run"):
        raise ValueError("a session's script carries its signed spec; a run's never does (it asks the hub)")
    if mode == "run" and not _RUN_ID.fullmatch(run_id or ""):
        raise ValueError(f"a run's script needs its run id, not {run_id!r}")
    if signed_spec is not None and ("\n" in signed_spec or SPEC_END in signed_spec):
        raise ValueError("the job spec must be one line of JSON")
    if "{" in settings.output or "}" in settings.output:
        raise ValueError(f"the job output {settings.output!r} still has a placeholder: fill its {{nonce}} first")
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={shlex.quote(('securehpc-run-' if mode == 'run' else 'securehpc-') + request.project)}",
        f"#SBATCH --comment={shlex.quote(tag)}",
        "#SBATCH --no-requeue",
        f"#SBATCH --partition={shlex.quote(policy.partition)}",
        f"#SBATCH --cpus-per-task={int(request.cpus)}",
        f"#SBATCH --mem={int(request.memory_gb)}G",
        f"#SBATCH --time={int(request.minutes)}",
        f"#SBATCH --output={shlex.quote(settings.output)}",
    ]
    if request.gpus:
        lines.append(f"#SBATCH --gres=gpu:{int(request.gpus)}")
    if policy.exclusive:
        lines.append("#SBATCH --exclusive")
    lines += [f"#SBATCH {option}" for option in settings.extra_sbatch]
    if mode == "run":
        # A headless run: the launcher asks the hub for the run's signed spec and key (its report secret and the
        # hub's URL are in sbatch's environment), then runs papermill in the sandbox.
        command = f"{shlex.quote(settings.node_command)} run --from-hub {shlex.quote(run_id)}"
        lines += ["set -euo pipefail", f"exec {command}", ""]
        return "\n".join(lines)
    lines += [
        "set -euo pipefail",
        'spec="$(mktemp)"',
        "trap 'rm -f \"$spec\"' EXIT",
        f"cat > \"$spec\" <<'{SPEC_END}'",
        signed_spec,
        SPEC_END,
        # Not exec: the trap removes the spec file when the launcher ends. The launcher reports its port to
        # the hub itself, on the node's address that the proxy reaches.
        f'{shlex.quote(settings.node_command)} serve --spec "$spec" --ip "$(hostname --ip-address | cut -d" " -f1)"',
        "",
    ]
    return "\n".join(lines)
