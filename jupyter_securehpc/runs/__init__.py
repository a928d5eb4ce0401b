"""Headless notebook runs: papermill in the session's sandbox, submitted through the hub, outputs encrypted.

- ``submit`` (here), ``client``: submit and follow runs from Python or a terminal with a JupyterHub API token;
- ``cli``: ``securehpc run submit|list|show|cancel|logs``;
- ``request``: a user's submission, parsed and checked against the project's policy;
- ``hub``: the hub's side (signed run spec, wrapped key, Slurm job as the project's account, the state poller);
- ``api``: the hub's REST endpoints and the launcher's strict run reports;
- ``runner``: papermill inside the sandbox (started by ``securehpc-node run``, node/run.py).

Nothing is imported here: the runner starts inside the sandbox, and the command line loads only what it uses.
"""

from __future__ import annotations

from typing import Any


def submit(project: str, notebook: str | None = None, parameters: dict | None = None, **options: Any) -> dict:
    """Submit a headless run of ``notebook`` (a path in ``project``'s workspace) with papermill ``parameters``;
    or, with ``upload="./local.ipynb"`` instead of ``notebook``, of a local notebook sent with the run (allowed to
    the roles in the project policy's ``upload_roles``; written to ``runs/RUN_ID/input/`` in the workspace).

    Papermill's names where they exist: ``kernel_name``; and the resources ``gpus``, ``cpus``, ``memory_gb``,
    ``time`` ("90", "2h"); ``wait=True`` follows the run to its end. The hub comes from ``hub_url`` or
    ``$JUPYTERHUB_URL``, the API token from ``token`` or ``$JUPYTERHUB_API_TOKEN``. Returns the run (its
    ``run_id``, ``state``, ``output``, ...); raises ``RunRefused`` or ``RunError`` with a one-line message.

    The hub checks everything and audits each refusal: parameter names and values go as given (NaN and infinities
    as their text, which the hub refuses naming the parameter), the notebook path as written. Only what cannot be
    sent is refused here, without an audit event: a value ``json`` cannot encode at all (a ``datetime``, a
    ``set``: ``RunRefused``; give its text, e.g. ``.isoformat()``), an upload that cannot be read (``RunError``),
    no hub address or token."""
    from .client import submit as submit_run

    return submit_run(project, notebook, parameters, **options)
