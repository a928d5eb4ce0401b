"""The data owner's and admin's command line, end to end on the real OpenBao and gocryptfs.

Every call runs the real ``securehpc`` command in a subprocess, as an admin would, against the test
cluster's OpenBao; each test gets its own database, store root, audit log and OpenBao key prefix.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time

import pytest
from sites import CLI, Site, files_containing, make_site, make_source, populate

from jupyter_securehpc.audit import verify
from jupyter_securehpc.devcluster import openbao
from jupyter_securehpc.keys import TokenUsedOrRevoked
from jupyter_securehpc.stores.importer import read_hashes

pytestmark = [pytest.mark.openbao, pytest.mark.sandbox]


@pytest.fixture
def site(local_cluster, tmp_path) -> Site:
    return make_site(tmp_path, local_cluster.layout)


@pytest.fixture
def populated(site) -> Site:
    return populate(site)


@pytest.fixture(scope="module")
def unchanging(local_cluster, tmp_path_factory) -> Site:
    """One populated site for the refusal table: every case asserts that it changed nothing."""
    return populate(make_site(tmp_path_factory.mktemp("refusals"), local_cluster.layout))


def test_import_share_accept_and_read_back_through_a_wrapped_token(populated, tmp_path):
    site = populated
    canary = f"CANARY-{secrets.token_hex(8)}"
    source_hashes = make_source(tmp_path / "src", canary)

    imported = site.json("dataset", "import", "sleep", "psg", str(tmp_path / "src"), as_user="alice")
    assert imported["files"] == 4
    # Only ciphertext under the store root: no file content or name carries the canary.
    assert files_containing(site.store_root, canary.encode()) == []
    assert not any(canary in str(p) for p in site.store_root.rglob("*"))

    site.ok("dataset", "share", "sleep/psg", "--with", "mri", as_user="alice")
    assert site.json("dataset", "list", "mri")["shared_in"] == [{"dataset": "sleep/psg", "state": "pending"}]
    site.ok("dataset", "accept", "mri", "sleep/psg", as_user="carol")
    assert site.json("project", "show", "mri")["shared_in"] == ["sleep/psg"]

    # A session of carol in mri: the wrapped token unwraps once, to the keys that mri may use.
    wrapped = site.json("key", "wrap", "mri", "--user", "carol", "--ttl", "60")
    assert wrapped["datasets"] == ["sleep/psg"]
    keys = site.keystore()
    session = keys.unwrap_session(wrapped["token"], datasets=[("sleep", "psg")], project="mri")
    store = site.store_root / "projects" / "sleep" / "datasets" / "psg"
    assert read_hashes(store, session.datasets["sleep/psg"]) == source_hashes
    with pytest.raises(TokenUsedOrRevoked):
        keys.unwrap_session(wrapped["token"], datasets=[("sleep", "psg")], project="mri")

    # After revoking, new mri sessions no longer get the dataset key.
    site.ok("dataset", "revoke", "sleep/psg", "--from", "mri", as_user="alice")
    assert site.json("project", "show", "mri")["shared_in"] == []
    assert site.json("key", "wrap", "mri", "--user", "carol")["datasets"] == []

    result = verify(site.audit_log)
    assert result.ok, result.problem
    actions = [(e["action"], e["outcome"]) for e in site.events()]
    for expected in ["dataset.import", "dataset.share", "dataset.accept", "key.wrap", "dataset.revoke"]:
        assert (expected, "allowed") in actions
    assert wrapped["token"] not in site.audit_log.read_text()


def test_as_user_is_recorded_with_the_admin(populated, tmp_path):
    make_source(tmp_path / "src", "x")
    populated.ok("dataset", "import", "sleep", "psg", str(tmp_path / "src"), as_user="alice")
    event = [e for e in populated.events() if e["action"] == "dataset.import"][-1]
    assert event["actor"] == "alice"
    assert event["on_behalf_of"] == os.environ.get("USER", "root") or event["on_behalf_of"]
    assert event["outcome"] == "allowed"
    assert event["object"] == "dataset:sleep/psg"


@pytest.mark.parametrize(
    ("args", "as_user", "message"),
    [
        (["project", "create", "", "--owner", "alice"], None, "project name is empty"),
        (["project", "create", "x" * 65, "--owner", "alice"], None, "more than 64"),
        (["project", "create", "a/b", "--owner", "alice"], None, "contains '/'"),
        (["project", "create", "..", "--owner", "alice"], None, "contains '..'"),
        (["project", "create", "with space", "--owner", "alice"], None, "whitespace"),
        (["project", "create", "cafe\u0301", "--owner", "alice"], None, "NFC"),
        (["project", "create", "SLEEP", "--owner", "alice"], None, "collides with existing project 'sleep'"),
        (["project", "create", "new", "--owner", "bad user"], None, "user name 'bad user' is not valid"),
        (["project", "create", "new", "--owner", "alice"], "alice", "only hub admins may project.create"),
        (["member", "add", "sleep", "dave", "--role", "superuser"], None, "unknown role 'superuser'"),
        (["member", "add", "sleep", "dave", "--role", "data_owner"], "bob", "only a data owner may member.add"),
        (["member", "add", "nope", "dave", "--role", "observer"], None, "project 'nope' does not exist"),
        (["member", "remove", "sleep", "alice"], None, "last data owner"),
        (["member", "remove", "sleep", "zed"], None, "'zed' is not a member"),
        (["policy", "set", "sleep", "max_gpu=2"], None, "unknown policy key 'max_gpu'"),
        (["policy", "set", "sleep", "max_gpus=-1"], None, "bad value '-1' for max_gpus"),
        (["policy", "set", "sleep", "max_gpus=2", "terminals=maybe"], None, "true or false"),
        (["policy", "set", "sleep", "max_gpus=2"], "alice", "only hub admins may policy.set"),
        (["policy", "set", "sleep", "max_gpus=2"], "bob", "only hub admins may policy.set"),
        (["policy", "show", "sleep"], "carol", "carol is not a member"),
        (["dataset", "import", "sleep", "d1", "SRC"], "bob", "only a data owner may dataset.import"),
        (["dataset", "import", "sleep", "d1", "SRC"], "olga", "only a data owner may dataset.import"),
        (["dataset", "import", "sleep", "d1", "SRC"], "carol", "carol is not a member"),
        (["dataset", "import", "sleep", "../d1", "SRC"], "alice", "contains '..'"),
        (["dataset", "import", "sleep", "d 1", "SRC"], "alice", "whitespace"),
        (["dataset", "import", "sleep", "d1", "MISSING"], "alice", "does not exist"),
        (["dataset", "import", "sleep", "d1", "FILE"], "alice", "is not a folder"),
        (["dataset", "share", "sleep/psg", "--with", "mri"], "alice", "dataset 'sleep/psg' does not exist"),
        (["dataset", "share", "sleep", "--with", "mri"], "alice", "is not PROJECT/DATASET"),
        (["dataset", "accept", "mri", "sleep/psg"], "alice", "alice is not a member"),
        (["dataset", "list", "sleep"], "carol", "carol is not a member"),
        (["key", "wrap", "sleep", "--user", "carol"], None, "carol is not a member"),
        (["key", "wrap", "sleep", "--user", "alice", "--ttl", "100000"], None, "outside 1..300"),
        (["key", "wrap", "sleep", "--user", "alice"], "alice", "only hub admins may key.wrap"),
        (["audit", "verify"], "alice", "alice may not read the audit log"),
        (["audit", "tail"], "bob", "bob may not read the audit log"),
    ],
)
def test_refusals_are_clear_and_change_nothing(unchanging, tmp_path, args, as_user, message):
    populated = unchanging
    make_source(tmp_path / "src", "x")
    (tmp_path / "file").write_text("not a folder")
    replace = {"SRC": str(tmp_path / "src"), "MISSING": str(tmp_path / "missing"), "FILE": str(tmp_path / "file")}
    args = [replace.get(a, a) for a in args]
    before = populated.state()
    events_before = len(populated.events())

    result = populated.run(*args, as_user=as_user)

    assert result.returncode == 1
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert populated.state() == before
    events = populated.events()[events_before:]
    assert events and events[0]["outcome"] in {"denied", "failed"}, events
    assert verify(populated.audit_log).ok


def test_dataset_share_refusals(populated, tmp_path):
    site = populated
    make_source(tmp_path / "src", "x")
    site.ok("dataset", "import", "sleep", "psg", str(tmp_path / "src"), as_user="alice")
    cases = [
        (["dataset", "share", "sleep/psg", "--with", "nowhere"], "alice", "project 'nowhere' does not exist"),
        (["dataset", "share", "sleep/psg", "--with", "sleep"], "alice", "already belongs to sleep"),
        (["dataset", "share", "sleep/psg", "--with", "mri"], "bob", "only a data owner may dataset.share"),
        (["dataset", "accept", "mri", "sleep/psg"], "carol", "no pending offer"),
        (["dataset", "revoke", "sleep/psg", "--from", "mri"], "alice", "is not shared with mri"),
        (["dataset", "import", "sleep", "PSG", str(tmp_path / "src")], "alice", "collides with sleep/psg"),
    ]
    for args, as_user, message in cases:
        before = site.state()
        result = site.run(*args, as_user=as_user)
        assert result.returncode == 1 and message in result.stderr, (args, result.stderr)
        assert site.state() == before
    site.ok("dataset", "share", "sleep/psg", "--with", "mri", as_user="alice")
    result = site.run("dataset", "accept", "mri", "sleep/psg", as_user="alice")
    assert result.returncode == 1 and "alice is not a member" in result.stderr
    result = site.run("dataset", "share", "sleep/psg", "--with", "mri", as_user="alice")
    assert result.returncode == 1 and "already shared with mri (pending)" in result.stderr


def test_unreachable_openbao_leaves_nothing_half_created(local_cluster, tmp_path):
    from jupyter_securehpc.devcluster.layout import free_port

    site = make_site(tmp_path, local_cluster.layout, vault_addr=f"http://127.0.0.1:{free_port()}")
    result = site.run("project", "create", "sleep", "--owner", "alice")
    assert result.returncode == 1
    assert site.env["VAULT_ADDR"] in result.stderr
    assert site.env["VAULT_TOKEN"] not in result.stderr
    site.env["VAULT_ADDR"] = local_cluster.layout.openbao_addr
    assert site.json("project", "list") == []
    assert not (site.store_root / "projects" / "sleep").exists()
    # Nothing was left behind that would block a retry.
    site.ok("project", "create", "sleep", "--owner", "alice")


def test_sealed_openbao_leaves_nothing_half_created(local_cluster, bao, populated, tmp_path):
    site = populated
    make_source(tmp_path / "src", "x")
    before = site.state()
    bao.sys.seal()
    try:
        result = site.run("dataset", "import", "sleep", "psg", str(tmp_path / "src"), as_user="alice")
        assert result.returncode == 1
        assert "sealed" in result.stderr
        result = site.run("project", "create", "third", "--owner", "alice")
        assert result.returncode == 1 and "sealed" in result.stderr
    finally:
        openbao.up(local_cluster.layout)  # unseals with the local cluster's key
    assert site.state() == before
    site.ok("dataset", "import", "sleep", "psg", str(tmp_path / "src"), as_user="alice")


def test_full_disk_during_import_leaves_no_dataset(local_cluster, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)], check=True)
    try:
        site = make_site(tmp_path, local_cluster.layout)
        site.env["SECUREHPC_STORE_ROOT"] = str(small)
        site.ok("project", "create", "sleep", "--owner", "alice")
        big = tmp_path / "big"
        big.mkdir()
        (big / "scan.nii").write_bytes(os.urandom(4 << 20))
        before = sorted(small.rglob("*"))
        result = site.run("dataset", "import", "sleep", "mri", str(big), as_user="alice")
        assert result.returncode == 1
        assert "No space left on device" in result.stderr
        assert sorted(small.rglob("*")) == before
        assert site.json("dataset", "list", "sleep")["datasets"] == []
        # The name is free again: a smaller import under it succeeds.
        (big / "scan.nii").write_bytes(os.urandom(100_000))
        site.ok("dataset", "import", "sleep", "mri", str(big), as_user="alice")
    finally:
        subprocess.run(["umount", "--lazy", str(small)], check=False)


def test_interrupted_import_registers_nothing_and_can_be_retried(populated, tmp_path):
    site = populated
    source = tmp_path / "src"
    source.mkdir()
    for index in range(40):
        (source / f"part{index:02}.bin").write_bytes(os.urandom(2 << 20))
    argv = [CLI, "--config", str(site.config), "--as", "alice", "dataset", "import", "sleep", "big", str(source)]
    process = subprocess.Popen(argv, env=site.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    incoming_parent = site.store_root / "projects" / "sleep" / "datasets"
    deadline = time.monotonic() + 60
    # Kill it mid-copy: once some encrypted files have appeared in the incoming folder.
    while time.monotonic() < deadline and not any(
        p.is_dir() and len(list(p.iterdir())) > 5 for p in incoming_parent.glob(".incoming-*")
    ):
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    assert site.json("dataset", "list", "sleep")["datasets"] == []
    assert not (incoming_parent / "big").exists()
    imported = site.json("dataset", "import", "sleep", "big", str(source), as_user="alice")
    assert imported["files"] == 40
    # The interrupted import's ciphertext (its key was never stored) was removed by the retry.
    assert sorted(p.name for p in incoming_parent.iterdir()) == ["big"]


def test_audit_verify_command_reports_tampering(populated):
    site = populated
    assert site.ok("audit", "verify").startswith("audit log OK")
    lines = site.audit_log.read_text().splitlines()
    assert "member:sleep/bob" in lines[2]  # the member add of bob, the third event
    lines[2] = lines[2].replace("member:sleep/bob", "member:sleep/eve")
    site.audit_log.write_text("\n".join(lines) + "\n")
    result = site.run("--json", "audit", "verify")
    assert result.returncode == 1
    assert json.loads(result.stdout)["first_bad_line"] == 3
    assert "DAMAGED" in site.run("audit", "verify").stdout


def test_policy_set_and_show(populated):
    site = populated
    policy = site.json("policy", "set", "sleep", "max_gpus=2", "download_roles=data_owner", "max_wall_time=2h")
    assert policy["max_gpus"] == 2 and policy["download_roles"] == ["data_owner"] and policy["max_wall_time"] == 120
    assert site.json("policy", "show", "sleep", as_user="olga") == policy
    event = [e for e in site.events() if e["action"] == "policy.set"][-1]
    assert event["outcome"] == "allowed" and set(event["details"]["changed"]) == {
        "max_gpus",
        "download_roles",
        "max_wall_time",
    }


def test_members_can_list_only_their_projects(populated):
    assert populated.json("project", "list", as_user="bob") == [{"name": "sleep", "role": "data_scientist"}]
    assert {p["name"] for p in populated.json("project", "list")} == {"sleep", "mri"}
    populated.ok("member", "add", "sleep", "bob", "--role", "observer", as_user="alice")
    assert populated.json("project", "list", as_user="bob") == [{"name": "sleep", "role": "observer"}]
    populated.ok("member", "remove", "sleep", "bob", as_user="alice")
    assert populated.json("project", "list", as_user="bob") == []


def test_key_sync_gives_projects_of_an_older_version_their_token_roles(populated, bao):
    site = populated
    keys = site.keystore()
    # As a version before token roles left them: each project has its policy, but no role.
    for project in ("sleep", "mri"):
        bao.adapter.delete(f"/v1/auth/token/roles/{keys.role_name(project)}")
    result = site.run("key", "wrap", "sleep", "--user", "alice")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "has no policy" in result.stderr and "run `securehpc key sync`" in result.stderr

    refused = site.run("key", "sync", as_user="alice")
    assert refused.returncode == 1 and "only hub admins may rewrite the projects' OpenBao policies" in refused.stderr
    assert site.json("key", "sync") == {"projects": ["mri", "sleep"]}
    wrapped = site.json("key", "wrap", "sleep", "--user", "alice")
    assert wrapped["creation_path"] == keys.session_path("sleep")
    assert keys.unwrap_session(wrapped["token"], project="sleep").project == "sleep"
    outcomes = [e["outcome"] for e in site.events() if e["action"] == "key.sync"]
    assert outcomes == ["denied", "allowed"]
    assert verify(site.audit_log).ok


def test_admin_cli_runs_on_the_provisioning_token_and_the_hub_on_its_runtime_token(local_cluster, bao, site, tmp_path):
    """The split of identities, end to end: provisioning never mints a token, the hub token never provisions."""
    keys = site.keystore()
    provisioning = bao.auth.token.create(policies=[_policy(bao, f"{site.prefix}-prov", keys.provisioner_policy())],
                                         ttl="10m")["auth"]["client_token"]  # fmt: skip
    runtime = bao.auth.token.create(policies=[_policy(bao, f"{site.prefix}-hub", keys.hub_policy())],
                                    ttl="10m")["auth"]["client_token"]  # fmt: skip
    site.env["VAULT_TOKEN"] = provisioning
    populate(site)
    make_source(tmp_path / "src", "x")
    site.ok("dataset", "import", "sleep", "psg", str(tmp_path / "src"), as_user="alice")
    site.ok("dataset", "share", "sleep/psg", "--with", "mri", as_user="alice")
    site.ok("dataset", "accept", "mri", "sleep/psg", as_user="carol")
    site.ok("key", "sync")
    result = site.run("key", "wrap", "mri", "--user", "carol")
    assert result.returncode == 1 and "KeyStore.hub_policy()" in result.stderr
    assert provisioning not in result.stderr

    site.env["VAULT_TOKEN"] = runtime
    wrapped = site.json("key", "wrap", "mri", "--user", "carol")
    session = keys.unwrap_session(wrapped["token"], datasets=[("sleep", "psg")], project="mri")
    assert set(session.datasets) == {"sleep/psg"}
    result = site.run("project", "create", "third", "--owner", "alice")
    assert result.returncode == 1 and "KeyStore.provisioner_policy()" in result.stderr
    assert runtime not in result.stderr
    result = site.run("dataset", "revoke", "sleep/psg", "--from", "mri", as_user="alice")
    assert result.returncode == 1 and "denied writing policy" in result.stderr


def _policy(bao, name: str, text: str) -> str:
    bao.sys.create_or_update_policy(name, text)
    return name
