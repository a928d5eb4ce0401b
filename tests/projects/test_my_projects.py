"""``ProjectService.my_projects``: everything the portal's start page shows of a person's projects in one call.

It must give each project exactly what ``show_project`` and ``list_sessions`` give (the page's two calls per
project before), to exactly the people those calls let read it, with one ``project.list`` event for the whole
view and a number of database queries that does not grow with the person's projects. On the real OpenBao and
gocryptfs (projects are made as an admin makes them); the hub's servers are the ``running`` callable's answer.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import event

from jupyter_securehpc.audit import AuditLog
from jupyter_securehpc.devcluster import openbao
from jupyter_securehpc.keys import KeyStore, KeyStoreConfig
from jupyter_securehpc.portal.hub import sessions_of
from jupyter_securehpc.projects.db import open_database
from jupyter_securehpc.projects.service import Actor, ProjectService

pytestmark = [pytest.mark.openbao, pytest.mark.sandbox]

EXTRA = ("eeg", "ecg", "genome")  # bob's further projects, for the query count


class Site:
    def __init__(self, root: Path, keys: KeyStore) -> None:
        self.root, self.keys = root, keys
        self.audit_log = root / "audit.jsonl"
        self.sessions = open_database(f"sqlite:///{root / 'securehpc.sqlite'}")

    def service(self, actor: Actor) -> ProjectService:
        return ProjectService(self.sessions, self.keys, AuditLog(self.audit_log), self.root / "stores", actor)

    def person(self, name: str) -> ProjectService:
        return self.service(Actor.signed_in(name, is_admin=False, via="portal"))

    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.audit_log.read_text().splitlines()]

    def statements(self, call: Callable[[], dict]) -> tuple[dict, list[str]]:
        """``call()``'s result and the SQL statements it sent to the database."""
        engine = self.sessions.kw["bind"]
        sent: list[str] = []

        def record(conn, cursor, statement, parameters, context, executemany) -> None:
            sent.append(statement)

        event.listen(engine, "before_cursor_execute", record)
        try:
            return call(), sent
        finally:
            event.remove(engine, "before_cursor_execute", record)


@pytest.fixture(scope="module")
def site(local_cluster, tmp_path_factory) -> Site:
    """sleep (alice owns, bob scientist, olga observer; dataset psg; mri/scans shared in and accepted; a
    policy of its own), mri (carol owns; dataset scans; sleep/psg offered, not accepted), and three more
    projects that alice owns."""
    layout = local_cluster.layout
    root = tmp_path_factory.mktemp("overview")
    prefix = f"o{secrets.token_hex(4)}"
    keys = KeyStore(KeyStoreConfig(url=layout.openbao_addr, token=openbao.root_token(layout), prefix=prefix,
                                   policy_prefix=f"{prefix}-project-"))  # fmt: skip
    site = Site(root, keys)
    admin = site.service(Actor(admin="test-admin"))
    admin.create_project("sleep", owner="alice")
    admin.create_project("mri", owner="carol")
    for name in EXTRA:
        admin.create_project(name, owner="alice")
    admin.add_member("sleep", "bob", "data_scientist")
    admin.add_member("sleep", "olga", "observer")
    admin.set_policy("sleep", ["max_gpus=2", "max_wall_time=90", "terminals=true"])
    for project, dataset in (("sleep", "psg"), ("mri", "scans")):
        source = root / f"source-{dataset}"
        source.mkdir()
        (source / "data.csv").write_text("t,value\n0,1\n")
        admin.import_dataset(project, dataset, source)
    admin.share_dataset("mri/scans", "sleep")
    admin.accept_share("sleep", "mri/scans")
    admin.share_dataset("sleep/psg", "mri")  # offered, never accepted: not shared into mri
    return site


def hub_servers(asked: list[dict[str, set[str]]]) -> Callable[[dict[str, set[str]]], dict[str, list[dict]]]:
    """A ``running`` callable answering from fixed hub user models (what the portal's would get from the hub),
    recording what it was asked."""
    users = [
        {"name": "bob", "servers": {"sleep": {"ready": True, "state": {"job_id": 7, "job_status": "R n1"}}}},
        # Not a member of sleep: a server of that name is not the project's.
        {"name": "mallory", "servers": {"sleep": {"ready": True}}},
        {"name": "carol", "servers": {"mri": {"ready": False, "pending": "spawn"}}},
    ]

    def running(members: dict[str, set[str]]) -> dict[str, list[dict]]:
        asked.append(members)
        return sessions_of(users, members)

    return running


def test_each_project_shows_what_show_project_and_list_sessions_show(site):
    asked: list[dict[str, set[str]]] = []
    bob = site.person("bob")
    overview = bob.my_projects(hub_servers(asked))

    (card,) = overview["projects"]
    shown = bob.show_project("sleep")
    sessions = bob.list_sessions("sleep", lambda members: hub_servers([])({"sleep": members})["sleep"])
    assert card == {
        "name": "sleep",
        "role": "data_scientist",
        "policy": shown["policy"],
        "datasets": shown["datasets"],
        "shared_in": shown["shared_in"],
        "members": [m["user"] for m in shown["members"]],
        "sessions": sessions,
    }
    assert (card["datasets"], card["shared_in"], card["members"]) == (["psg"], ["mri/scans"], ["alice", "bob", "olga"])
    assert (card["policy"]["max_gpus"], card["policy"]["max_wall_time"], card["policy"]["terminals"]) == (2, 90, True)
    assert [(s["user"], s["job_id"], s["node"]) for s in card["sessions"]] == [("bob", "7", "n1")]
    assert overview["total"] == 1
    # The hub is asked once, about the projects shown, with each one's members (as list_sessions asks).
    assert asked == [{"sleep": {"alice", "bob", "olga"}}]


def test_one_event_names_the_projects_of_the_view(site):
    before = len(site.events())
    site.person("alice").my_projects(hub_servers([]))
    (event,) = site.events()[before:]
    assert (event["action"], event["object"], event["outcome"], event["actor"]) == (
        "project.list", "projects", "allowed", "alice"
    )  # fmt: skip
    assert event["details"] == {"count": 4, "projects": ["ecg", "eeg", "genome", "sleep"], "sessions": 1,
                                "via": "portal"}  # fmt: skip


@pytest.mark.parametrize(
    ("actor", "projects", "total"),
    [
        (Actor.signed_in("alice", is_admin=False, via="portal"), ["ecg", "eeg", "genome", "sleep"], 4),
        (Actor.signed_in("olga", is_admin=False, via="portal"), ["sleep"], 1),
        (Actor.signed_in("carol", is_admin=False, via="portal"), ["mri"], 1),
        # Not a member anywhere: nothing, and the hub is not asked.
        (Actor.signed_in("mallory", is_admin=False, via="portal"), [], 0),
        # Hub admins see here only the projects they are members of (the admin page lists all); total: all.
        (Actor.signed_in("test-admin", is_admin=True, via="portal"), [], 5),
        # An admin acting as a member (the command line's --as) has that member's view.
        (Actor(admin="test-admin", as_user="carol"), ["mri"], 1),
    ],
)
def test_only_members_see_a_project(site, actor, projects, total):
    asked: list[dict[str, set[str]]] = []
    overview = site.service(actor).my_projects(hub_servers(asked))
    assert [p["name"] for p in overview["projects"]] == projects
    assert overview["total"] == total
    assert [set(question) for question in asked] == ([set(projects)] if projects else [])
    # Exactly the projects list_projects gives the person with a role (the page's list before).
    mine = [p["name"] for p in site.service(actor).list_projects() if p["role"]]
    assert mine == projects


def test_a_removed_member_no_longer_sees_the_project(site):
    admin = site.service(Actor(admin="test-admin"))
    admin.add_member("mri", "bob", "observer")
    assert [p["name"] for p in site.person("bob").my_projects(hub_servers([]))["projects"]] == ["mri", "sleep"]
    admin.remove_member("mri", "bob")
    assert [p["name"] for p in site.person("bob").my_projects(hub_servers([]))["projects"]] == ["sleep"]


def test_the_queries_do_not_grow_with_the_projects(site):
    admin = site.service(Actor(admin="test-admin"))
    _, one = site.statements(lambda: site.person("bob").my_projects(hub_servers([])))
    try:
        for name in EXTRA:
            admin.add_member(name, "bob", "data_scientist")
        overview, four = site.statements(lambda: site.person("bob").my_projects(hub_servers([])))
        assert len(overview["projects"]) == 4
    finally:
        for name in EXTRA:
            admin.remove_member(name, "bob")
    # One transaction; the projects with roles, their members, datasets and accepted shares: four queries,
    # however many projects.
    for sent in (one, four):
        assert [s.split()[0] for s in sent] == ["BEGIN", "SELECT", "SELECT", "SELECT", "SELECT"], sent


def test_sessions_of_keeps_each_projects_members_servers_only():
    users = [
        {"name": "bob", "servers": {"sleep": {"ready": True}, "mri": {"ready": True}, "": {"ready": True}}},
        {"name": "carol", "servers": {"mri": {"ready": False, "pending": "spawn"}}},
        {"name": "dora", "servers": {}},
        {"name": "erik"},
    ]
    found = sessions_of(users, {"sleep": {"bob", "carol"}, "mri": {"carol"}, "eeg": {"dora"}})
    assert {project: [s["user"] for s in sessions] for project, sessions in found.items()} == {
        "sleep": ["bob"],
        "mri": ["carol"],  # bob's server named mri is not the project's: he is not its member
        "eeg": [],
    }
    assert found["mri"][0]["pending"] == "spawn" and not found["mri"][0]["ready"]
