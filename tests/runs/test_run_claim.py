"""A run's start claimed through ``ProjectService.claim_run_start``: once, while Slurm shows its job running, by the
hub only, every refusal audited; and a run refused its key at start ends failed, saying why.

The hub's side around it (the report secret, scontrol, the key, the answer) is tested end to end in
test_runs_e2e.py; here the claim itself, on the real OpenBao (projects are made as an admin makes them) and the
projects database, with requests at once from several threads as two hub requests would make them.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from pathlib import Path

import nbformat
import pytest

from jupyter_securehpc.audit import AuditLog
from jupyter_securehpc.devcluster import openbao
from jupyter_securehpc.keys import KeyStore, KeyStoreConfig
from jupyter_securehpc.projects.db import open_database
from jupyter_securehpc.projects.service import Actor, ProjectService, Refused

pytestmark = [pytest.mark.openbao]


def upload() -> dict:
    document = nbformat.v4.new_notebook()
    document.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    first = nbformat.v4.new_code_cell("alpha = 0.1")
    first.metadata["tags"] = ["parameters"]
    document.cells = [first, nbformat.v4.new_code_cell("print(alpha)")]
    return {"name": "claim.ipynb", "content": nbformat.writes(document)}


class Site:
    def __init__(self, root: Path, keys: KeyStore) -> None:
        self.root, self.keys = root, keys
        self.audit_log = root / "audit.jsonl"
        self.sessions = open_database(f"sqlite:///{root / 'securehpc.sqlite'}")

    def service(self, actor: Actor) -> ProjectService:
        return ProjectService(self.sessions, self.keys, AuditLog(self.audit_log), self.root / "stores", actor)

    def hub(self) -> ProjectService:
        return self.service(Actor(admin="jupyterhub-runs"))

    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.audit_log.read_text().splitlines()]

    def queued_run(self) -> str:
        """A run of alice's, submitted to Slurm as job 4711 (nothing runs: the claim is what is tested)."""
        person = self.service(Actor.signed_in("alice", is_admin=False, via="hub-runs"))
        record = person.submit_run({"project": "sleep", "upload": upload(), "parameters": {"alpha": 2}},
                                   report_hash="0" * 64)  # fmt: skip
        self.hub().run_submitted(record.run_id, "4711")
        return record.run_id


@pytest.fixture(scope="module")
def site(local_cluster, tmp_path_factory) -> Site:
    layout = local_cluster.layout
    root = tmp_path_factory.mktemp("claims")
    prefix = f"c{secrets.token_hex(4)}"
    keys = KeyStore(KeyStoreConfig(url=layout.openbao_addr, token=openbao.root_token(layout), prefix=prefix,
                                   policy_prefix=f"{prefix}-project-"))  # fmt: skip
    site = Site(root, keys)
    site.service(Actor(admin="test-admin")).create_project("sleep", owner="alice")
    return site


def test_a_run_is_started_once_of_many_requests_at_once_and_only_while_its_job_runs(site):
    run_id = site.queued_run()
    before = len(site.events())
    # Slurm shows the job waiting (or not at all): no claim, audited, nothing recorded.
    for state, says in (("PENDING", "(PENDING)"), (None, "(unknown)")):
        with pytest.raises(Refused, match=rf"job 4711 of run {run_id} is not running in Slurm {re.escape(says)}"):
            site.hub().claim_run_start(run_id, state)
    assert site.hub().hub_run(run_id).started_at is None
    # Slurm says RUNNING: the poller records the state, but that is no claim.
    site.hub().record_slurm_state(run_id, "RUNNING")
    assert site.hub().hub_run(run_id).state == "running" and site.hub().hub_run(run_id).started_at is None

    results: list[object] = []

    def claim() -> None:
        try:
            results.append(site.hub().claim_run_start(run_id, "RUNNING"))
        except Refused as error:
            results.append(error)

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    claimed = [result for result in results if not isinstance(result, Refused)]
    refused = [result for result in results if isinstance(result, Refused)]
    assert len(claimed) == 1 and len(refused) == 3, results
    assert claimed[0].started_at is not None and claimed[0].state == "running"
    assert all("was started already" in str(error) for error in refused)
    assert site.hub().hub_run(run_id).started_at == claimed[0].started_at
    with pytest.raises(Refused, match="was started already"):
        site.hub().claim_run_start(run_id, "RUNNING")
    mine = [(e["action"], e["outcome"]) for e in site.events()[before:]]
    assert mine.count(("run.start", "allowed")) == 1
    assert mine.count(("run.start", "denied")) == 2 + 3 + 1


def test_only_the_hub_claims_a_start(site):
    run_id = site.queued_run()
    alice = site.service(Actor.signed_in("alice", is_admin=False, via="hub-runs"))
    with pytest.raises(Refused):
        alice.claim_run_start(run_id, "RUNNING")
    assert site.hub().hub_run(run_id).started_at is None


def test_a_run_refused_its_key_at_start_ends_failed_saying_why_and_cannot_start_again(site):
    run_id = site.queued_run()
    site.hub().claim_run_start(run_id, "RUNNING")
    ended = site.hub().run_not_started(run_id, "no session key for alice in sleep: alice is not a member")
    assert ended.state == "failed" and ended.reason == "not started: no session key for alice in sleep: alice is " \
        "not a member"  # fmt: skip
    last = site.events()[-1]
    assert (last["action"], last["outcome"]) == ("run.end", "denied")
    with pytest.raises(Refused, match="was started already"):
        site.hub().claim_run_start(run_id, "RUNNING")
    # A run that ended before its job ran (cancelled) cannot be started either.
    other = site.queued_run()
    site.hub().record_slurm_state(other, "CANCELLED")
    with pytest.raises(Refused, match=f"run {other} is cancelled: it cannot start"):
        site.hub().claim_run_start(other, "RUNNING")
