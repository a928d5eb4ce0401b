"""``ProjectService.session_grant`` and ``startable_projects``: what the spawner gets, on the real OpenBao.

The spawner starts every session through these two calls (it never reads the projects database itself), so
they are tested as the spawner uses them: a grant's role, policy, datasets and accepted shares, its wrapped
token (which unwraps once, to exactly those keys), the ``key.wrap`` event, and each refusal with its event.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
from sqlalchemy import delete

from jupyter_securehpc.audit import AuditLog
from jupyter_securehpc.devcluster import openbao
from jupyter_securehpc.keys import KeyStore, KeyStoreConfig, TokenUsedOrRevoked
from jupyter_securehpc.principals import DEFAULT_PREFIX, group_name, principal_name
from jupyter_securehpc.projects.db import open_database
from jupyter_securehpc.projects.model import Principal
from jupyter_securehpc.projects.policy import Policy
from jupyter_securehpc.projects.roles import Role
from jupyter_securehpc.projects.service import Actor, BadInput, ProjectService, Refused
from jupyter_securehpc.vocabulary import DatasetRef

pytestmark = [pytest.mark.openbao, pytest.mark.sandbox]


class Site:
    def __init__(self, root: Path, keys: KeyStore) -> None:
        self.root, self.keys = root, keys
        self.audit_log = root / "audit.jsonl"
        self.sessions = open_database(f"sqlite:///{root / 'securehpc.sqlite'}")

    def service(self, actor: Actor | None = None) -> ProjectService:
        return ProjectService(
            self.sessions, self.keys, AuditLog(self.audit_log), self.root / "stores", actor or Actor(admin="hub")
        )

    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.audit_log.read_text().splitlines()]


@pytest.fixture(scope="module")
def site(local_cluster, tmp_path_factory) -> Site:
    """sleep (alice owns, bob scientist, olga observer; dataset psg; mri/scans shared in and accepted) and mri
    (carol owns; dataset scans; sleep/psg offered but not accepted)."""
    layout = local_cluster.layout
    root = tmp_path_factory.mktemp("grants")
    prefix = f"g{secrets.token_hex(4)}"
    keys = KeyStore(KeyStoreConfig(url=layout.openbao_addr, token=openbao.root_token(layout), prefix=prefix,
                                   policy_prefix=f"{prefix}-project-"))  # fmt: skip
    site = Site(root, keys)
    admin = site.service(Actor(admin="test-admin"))
    admin.create_project("sleep", owner="alice")
    admin.create_project("mri", owner="carol")
    admin.add_member("sleep", "bob", "data_scientist")
    admin.add_member("sleep", "olga", "observer")
    admin.set_policy("sleep", ["key_ttl=600"])
    for project, dataset in (("sleep", "psg"), ("mri", "scans")):
        source = root / f"source-{dataset}"
        source.mkdir()
        (source / "data.csv").write_text("t,value\n0,1\n")
        admin.import_dataset(project, dataset, source)
    admin.share_dataset("mri/scans", "sleep")
    admin.accept_share("sleep", "mri/scans")
    admin.share_dataset("sleep/psg", "mri")  # offered, never accepted: not part of mri's sessions
    return site


def test_a_grant_names_role_policy_datasets_and_accepted_shares_and_its_token_opens_exactly_them(site):
    grant = site.service().session_grant("sleep", "bob")

    assert grant.role is Role.DATA_SCIENTIST
    assert grant.policy.key_ttl == 600 and grant.ttl == 600
    assert grant.datasets == (DatasetRef("sleep", "psg"),)
    assert grant.shares == (DatasetRef("mri", "scans"),)
    assert grant.mounted_datasets == (DatasetRef("sleep", "psg"), DatasetRef("mri", "scans"))
    session = site.keys.unwrap_session(grant.wrapped.token, datasets=grant.mounted_datasets, project="sleep")
    assert sorted(session.datasets) == ["mri/scans", "sleep/psg"]
    with pytest.raises(TokenUsedOrRevoked):
        site.keys.unwrap_session(grant.wrapped.token, datasets=grant.mounted_datasets, project="sleep")

    event = site.events()[-1]
    assert (event["action"], event["outcome"], event["actor"]) == ("key.wrap", "allowed", "hub")
    assert event["object"] == "session-key:sleep/bob"
    # The session runs as bob's principal in sleep, from the database; the event names it.
    assert grant.principal == principal_name(DEFAULT_PREFIX, "sleep", "bob") != "bob"
    assert grant.group == group_name(DEFAULT_PREFIX, "sleep")
    assert event["details"] == {"user": "bob", "ttl": 600, "role": "data_scientist", "principal": grant.principal}
    assert grant.wrapped.token not in site.audit_log.read_text()


def test_each_member_has_a_principal_of_their_own_in_each_project(site):
    service = site.service(Actor(admin="test-admin"))
    accounts = {(row["project"], row["user"]): row for row in service.list_accounts()}
    assert set(accounts) == {("sleep", "alice"), ("sleep", "bob"), ("sleep", "olga"), ("mri", "carol")}
    assert len({row["principal"] for row in accounts.values()}) == 4
    assert {row["group"] for row in accounts.values() if row["project"] == "sleep"} == {
        group_name(DEFAULT_PREFIX, "sleep")
    }
    # Only hub admins list them (a site's directory is filled from the list), and a refusal is audited.
    with pytest.raises(Refused, match="only hub admins"):
        site.service(Actor(admin="test-admin", as_user="alice")).list_accounts()
    assert site.events()[-1]["outcome"] == "denied"


def test_a_removed_member_keeps_a_locked_principal_and_gets_it_back(site):
    admin = site.service(Actor(admin="test-admin"))
    admin.add_member("sleep", "ivan", "data_scientist")
    first = site.service().session_grant("sleep", "ivan")
    site.keys.revoke_session(first.wrapped)
    removed = admin.remove_member("sleep", "ivan")
    assert removed["locked_principal"] == first.principal
    assert {(r["user"], r["state"]) for r in admin.list_accounts("sleep")} >= {("ivan", "locked")}
    with pytest.raises(Refused, match="ivan is not a member"):
        site.service().session_grant("sleep", "ivan")
    assert admin.add_member("sleep", "ivan", "observer")["principal"] == first.principal
    again = site.service().session_grant("sleep", "ivan")
    assert again.principal == first.principal and again.role is Role.OBSERVER
    site.keys.revoke_session(again.wrapped)
    admin.remove_member("sleep", "ivan")


def test_a_member_without_a_principal_gets_no_session_key_until_account_sync(site):
    # A project from before principals: its members have none (as after an upgrade of the database).
    admin = site.service(Actor(admin="test-admin"))
    admin.add_member("sleep", "pia", "data_scientist")
    with site.sessions() as session, session.begin():
        session.execute(delete(Principal).where(Principal.username == "pia"))
    with pytest.raises(Refused, match="no project account"):
        site.service().session_grant("sleep", "pia")
    assert (site.events()[-1]["action"], site.events()[-1]["outcome"]) == ("key.wrap", "denied")
    result = admin.sync_accounts()
    assert principal_name(DEFAULT_PREFIX, "sleep", "pia") in result["principals"]
    grant = site.service().session_grant("sleep", "pia")
    assert grant.principal == principal_name(DEFAULT_PREFIX, "sleep", "pia")
    site.keys.revoke_session(grant.wrapped)
    admin.remove_member("sleep", "pia")


def test_a_share_that_was_only_offered_is_not_granted(site):
    grant = site.service().session_grant("mri", "carol")
    assert (grant.role, grant.datasets, grant.shares) == (Role.DATA_OWNER, (DatasetRef("mri", "scans"),), ())
    site.keys.revoke_session(grant.wrapped)


def test_the_cli_key_wrap_is_the_same_grant(site):
    result = site.service().wrap_session_key("sleep", "olga", 60)
    assert (result["role"], result["ttl"], result["datasets"]) == ("observer", 60, ["sleep/psg", "mri/scans"])
    site.keys.revoke_session(result["wrapped"])


@pytest.mark.parametrize(
    ("actor", "project", "user", "ttl", "error", "message"),
    [
        # Not a member of the project: no key, whoever asks.
        (Actor(admin="hub"), "mri", "bob", None, Refused, "bob is not a member of this project"),
        (Actor(admin="hub"), "sleep", "mallory", None, Refused, "mallory is not a member"),
        # Only hub admins (and the hub) wrap keys: a member cannot mint one for herself.
        (Actor(admin="test-admin", as_user="bob"), "sleep", "bob", None, Refused, "only hub admins may key.wrap"),
        (Actor(admin="hub"), "nope", "bob", None, BadInput, "project 'nope' does not exist"),
        (Actor(admin="hub"), "sleep", "bob", 601, BadInput, "outside 1..600 seconds"),
    ],
)
def test_refusals_grant_nothing_and_are_audited(site, actor, project, user, ttl, error, message):
    with pytest.raises(error, match=message):
        site.service(actor).session_grant(project, user, ttl)
    event = site.events()[-1]
    assert event["action"] == "key.wrap" and event["outcome"] in {"denied", "failed"}
    assert message.split(" ")[0] in event["reason"]


def test_startable_projects_are_the_members_own_with_their_policies(site):
    before = site.audit_log.read_text()
    service = site.service()
    assert set(service.startable_projects("bob")) == {"sleep"}
    assert set(service.startable_projects("olga")) == {"sleep"}  # observers start sessions too (read-only)
    assert set(service.startable_projects("carol")) == {"mri"}
    assert service.startable_projects("mallory") == {}
    policy = service.startable_projects("alice")["sleep"]
    assert isinstance(policy, Policy) and policy.key_ttl == 600
    # Showing someone their own projects is no decision: nothing is written.
    assert site.audit_log.read_text() == before
