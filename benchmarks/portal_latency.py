"""Latency of the project portal's project lists against the hub's own ``GET /hub/api/users``, in one run.

    .venv/bin/python benchmarks/portal_latency.py [--rounds 300] [--projects 1000] [--memberships 10000]

Run as root from the checkout. It starts its own local cluster (munge, Slurm, OpenBao, the OpenID provider;
loopback, free ports) and one real JupyterHub with configurable-http-proxy and the portal as its managed
service, set up as for the portal's tests (tests/portal_site.py: the dummy authenticator, an API token per
person, ``ada`` the portal's admin). The hub knows 10,000 users (``allowed_users``: it records them at start)
besides the site's six people. The projects database gets 1,000 projects with 10,000 memberships among those
users, each member's principal recorded (``ProjectAccounts.provisioner`` "none": no Unix accounts), written in
one transaction through the database layer ``ProjectService`` uses (``projects/db.py``, ``projects/model.py``),
with the names, keys, groups and principals ``ProjectService`` would record: creating them one by one through
``ProjectService`` would also make an OpenBao key and a gocryptfs store per project, which the lists never
read (they touch neither the key server nor the stores). The ordinary member measured is in 20 of the
projects (and in ``alpha`` of the site); every other user is in at most one.

Measured through the hub's proxy with API tokens, one request at a time, the kinds in turn (the order rotating
each round), after a warm-up round:

- **my projects**: ``GET /services/securehpc/api/v1/projects`` as the ordinary member;
- **admin project list**: the same as the portal's admin (every project);
- **hub users**: ``GET /hub/api/users``, with the local hub's inspector token (``list:users``, ``read:users``):
  without the pagination header JupyterHub answers its largest page, 200 of the 10,000 users;
- **hub users, paged**: the same with ``Accept: application/jupyterhub-pagination+json`` (as the hub's own admin
  page asks): 50 users and the total count;
- **my projects page**: the portal's start page as the ordinary member (each project's card: role, policy,
  datasets, running sessions; one ``ProjectService.my_projects`` call, which asks the hub once);
- **audit log page**: ``GET .../api/v1/audit?limit=50`` as the admin, the audit log holding ``--audit-events``
  events (100,000; appended through ``AuditLog`` before the measurement).

Prints a Markdown table (median and p99 per kind, and each portal kind's ratio to the hub's default call:
below 1.0 is faster than the hub) and writes ``benchmarks/results/portal_latency.json``. Every portal request
also appends its audit event (``project.list``), as in production; the audit log is part of what is measured.
No timing is asserted anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import requests

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE.parent / "tests"))

import portal_site  # noqa: E402
from portal_site import ADMIN, OBSERVER, OTHER_OWNER, OUTSIDER, OWNER  # noqa: E402

from jupyter_securehpc.audit import AuditLog  # noqa: E402
from jupyter_securehpc.devcluster import ClusterLayout, LocalCluster, hub  # noqa: E402
from jupyter_securehpc.principals import group_name, principal_name  # noqa: E402
from jupyter_securehpc.projects.db import open_database  # noqa: E402
from jupyter_securehpc.projects.model import Member, Principal, Project  # noqa: E402
from jupyter_securehpc.projects.roles import Role  # noqa: E402
from jupyter_securehpc.vocabulary import name_key  # noqa: E402

MEMBER = "mira"  # the ordinary member measured (the site's data scientist of alpha)
MEMBER_PROJECTS = 20
SEEDER = "benchmark-seed"
KINDS = ("my projects", "admin project list", "hub users", "hub users, paged", "my projects page", "audit log page")
CARD = 'class="card mb-3 project-card"'  # one per project on the my projects page
PAGINATED = "application/jupyterhub-pagination+json"


def hub_users(count: int) -> list[str]:
    return [f"user{index:05d}" for index in range(count)]


def memberships(projects: int, total: int, users: list[str]) -> dict[str, list[tuple[str, Role]]]:
    """``{project: [(user, role), ...]}``: ``total`` memberships spread evenly over the projects (one data owner
    each, then data scientists and observers), users taken in turn; MEMBER takes one seat in 20 projects."""
    names = [f"study-{index:04d}" for index in range(projects)]
    plan: dict[str, list[tuple[str, Role]]] = {name: [] for name in names}
    for seat in range(total):
        project = names[seat % projects]
        position = len(plan[project])
        role = Role.DATA_OWNER if position == 0 else Role.DATA_SCIENTIST if position < 7 else Role.OBSERVER
        plan[project].append((users[seat % len(users)], role))
    step = projects // MEMBER_PROJECTS
    for index in range(MEMBER_PROJECTS):
        seats = plan[names[index * step]]
        seats[-1] = (MEMBER, Role.DATA_SCIENTIST)
    return plan


def seed(db_url: str, account_prefix: str, plan: dict[str, list[tuple[str, Role]]]) -> float:
    """Write the projects, members and principals in one transaction; the seconds it took."""
    began = time.perf_counter()
    sessions = open_database(db_url)
    with sessions() as session, session.begin():
        for name, seats in plan.items():
            project = Project(name=name, name_key=name_key(name), created_by=SEEDER, policy={},
                              unix_group=group_name(account_prefix, name))  # fmt: skip
            project.members = [Member(username=user, role=role.value, added_by=SEEDER) for user, role in seats]
            project.principals = [
                Principal(
                    username=user, name=principal_name(account_prefix, name, user), state="active", created_by=SEEDER
                )
                for user, _role in seats
            ]
            session.add(project)
    return time.perf_counter() - began


def seed_audit(path: Path, count: int, users: list[str]) -> float:
    """Append ``count`` events like the portal's own (who listed which projects) to the audit log."""
    began = time.perf_counter()
    log = AuditLog(path)
    for index in range(count):
        project = f"study-{index % 1000:04d}"
        log.append(actor=users[index % len(users)], action="project.show", obj=f"project:{project}",
                   outcome="allowed", project=project, reason="member or admin", via="portal")  # fmt: skip
    return time.perf_counter() - began


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


class Client:
    """One keep-alive connection per kind, as a script or a browser tab would hold."""

    def __init__(self, url: str, token: str, expect: int, *, paged: bool = False, page: bool = False) -> None:
        self.url = url
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"token {token}"
        if paged:
            self.http.headers["Accept"] = PAGINATED
        self.expect = expect  # how many items the answer must hold
        self.page = page  # an HTML page (items: project cards) rather than JSON

    def once(self) -> float:
        began = time.perf_counter()
        response = self.http.get(self.url, timeout=120)
        seconds = time.perf_counter() - began
        if response.status_code != 200:
            raise RuntimeError(f"{self.url} answered {response.status_code}: {response.text[:300]}")
        if self.page:
            count = response.text.count(CARD)
        else:
            data = response.json()
            count = len(data if isinstance(data, list) else data.get("projects", data.get("items", data.get("events"))))
        if count != self.expect:
            raise RuntimeError(f"{self.url} listed {count} items, expected {self.expect}")
        return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=300, help="measured requests of each kind (default 300)")
    parser.add_argument("--projects", type=int, default=1000)
    parser.add_argument("--memberships", type=int, default=10000)
    parser.add_argument("--users", type=int, default=10000, help="hub users (default 10000)")
    parser.add_argument("--audit-events", type=int, default=100_000, help="events in the audit log (default 100000)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: it starts Slurm, OpenBao and JupyterHub")
    root = Path(tempfile.mkdtemp(prefix="securehpc-bench-portal-"))
    root.chmod(0o755)
    cluster = LocalCluster(ClusterLayout.load_or_create(root / "cluster", random_ports=True))
    users = hub_users(args.users)
    people = [ADMIN, OWNER, MEMBER, OBSERVER, OUTSIDER, OTHER_OWNER]
    settings = {"Authenticator.allowed_users": {*people, *users}}
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    site = None
    try:
        cluster.up(install=False)
        slurm_env = {**os.environ, **cluster.layout.client_env()}
        began = time.perf_counter()
        # The hub gives each of its 10,000 new users the `user` role at its first start (~10 ms each here).
        site = portal_site.site(cluster, SimpleNamespace(name=MEMBER), slurm_env, settings, start_timeout=1200)
        facts = next(site)
        started = time.perf_counter() - began
        plan = memberships(args.projects, args.memberships, users)
        seeded = seed(f"sqlite:///{facts['db']}", facts["account_prefix"], plan)
        logged = seed_audit(facts["audit"], args.audit_events, users)
        print(f"hub and portal up in {started:.1f} s; {args.projects} projects, {args.memberships} memberships "
              f"in {seeded:.1f} s, {args.audit_events} audit events in {logged:.1f} s", file=sys.stderr)  # fmt: skip
        base, hub_api = facts["base"], f"{cluster.layout.hub_url}/hub/api"
        inspector = hub.api_token_file(cluster.layout).read_text().strip()
        clients = {
            "my projects": Client(f"{base}/projects", facts["tokens"][MEMBER], MEMBER_PROJECTS + 1),
            "admin project list": Client(f"{base}/projects", facts["tokens"][ADMIN], args.projects + 2),
            "hub users": Client(f"{hub_api}/users", inspector, 200),
            "hub users, paged": Client(f"{hub_api}/users", inspector, 50, paged=True),
            "my projects page": Client(
                f"{cluster.layout.hub_url}/services/securehpc/", facts["tokens"][MEMBER], MEMBER_PROJECTS + 1, page=True
            ),
            "audit log page": Client(f"{base}/audit?limit=50", facts["tokens"][ADMIN], 50),
        }
        total = requests.get(f"{hub_api}/users?limit=1", timeout=60,
                             headers={"Authorization": f"token {inspector}", "Accept": PAGINATED})  # fmt: skip
        hub_total = total.json()["_pagination"]["total"]
        for client in clients.values():  # warm-up: connections, the portal's token cache, the hub's caches
            client.once()
        for index in range(args.rounds):
            order = KINDS[index % len(KINDS) :] + KINDS[: index % len(KINDS)]
            for kind in order:
                times[kind].append(clients[kind].once())
            if (index + 1) % 50 == 0:
                print(f"round {index + 1}: " + ", ".join(f"{k} {1000 * times[k][-1]:.1f} ms" for k in KINDS),
                      file=sys.stderr)  # fmt: skip
        audit_events = len(facts["audit"].read_text().splitlines())
    finally:
        if site is not None:
            site.close()  # stops the hub and the portal, removes the site's files
        hub.down(cluster.layout)
        cluster.down()
        shutil.rmtree(root, ignore_errors=True)
    report(args, times, hub_total, audit_events)


def report(args: argparse.Namespace, times: dict[str, list[float]], hub_total: int, audit_events: int) -> None:
    summary = {
        kind: {
            "median_ms": 1000 * statistics.median(values),
            "p99_ms": 1000 * percentile(values, 0.99),
            "min_ms": 1000 * min(values),
            "max_ms": 1000 * max(values),
        }
        for kind, values in times.items()
    }
    reference = summary["hub users"]
    machine = f"{platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    print(f"\n{when}, {machine}: {args.projects} projects, {args.memberships} memberships, {hub_total} hub users, "
          f"{args.rounds} requests of each kind, one at a time\n")  # fmt: skip
    print("| request | items | median ms | p99 ms | median / hub's | p99 / hub's |\n|---|---:|---:|---:|---:|---:|")
    items = {"my projects": MEMBER_PROJECTS + 1, "admin project list": args.projects + 2, "hub users": 200,
             "hub users, paged": 50, "my projects page": MEMBER_PROJECTS + 1, "audit log page": 50}  # fmt: skip
    for kind, data in summary.items():
        ratio = data["median_ms"] / reference["median_ms"]
        tail = data["p99_ms"] / reference["p99_ms"]
        print(f"| {kind} | {items[kind]} | {data['median_ms']:.1f} | {data['p99_ms']:.1f} | {ratio:.2f} | {tail:.2f} |")
    print(f"\n(the audit log held {audit_events} events at the end)")
    RESULTS.mkdir(exist_ok=True)
    result = {"date": when, "machine": machine, "projects": args.projects, "memberships": args.memberships,
              "hub_users": hub_total, "audit_events": audit_events, "rounds": args.rounds, "summary": summary,
              "times": times}  # fmt: skip
    (RESULTS / "portal_latency.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
