"""``securehpc dev up|down|status|install|env``: the local cluster for the demo and the tests.

A plugin of ``securehpc`` (entry point ``dev`` of ``jupyter_securehpc.cli_plugins``): loaded only when the
verb is used, and usable only with the ``[dev]`` extra installed.
"""

from __future__ import annotations

import argparse
import grp
import json
import os
import pwd
import shlex
import sys
from pathlib import Path

from ..session.env import AUDIT_LOG_ENV, DB_ENV, DEV_STATE_ENV, STORE_ROOT_ENV
from . import commands, demo, hub, oidc, openbao, portal
from .cluster import LocalCluster, ServiceStatus
from .layout import ClusterLayout, default_state_dir
from .packages import install_all, require_python_extra


def configure(dev: argparse.ArgumentParser) -> None:
    """Fill the parser of ``securehpc dev``; RuntimeError naming the extra when it is not installed."""
    require_python_extra()
    dev.description = "The local single-machine cluster (demo and tests)."
    dev.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="folder of the cluster's state and logs (default: $SECUREHPC_DEV_STATE or /var/lib/securehpc-dev)",
    )
    # Ports are chosen once, when the state folder is new, and saved in its cluster.json.
    ports = dev.add_mutually_exclusive_group()
    ports.add_argument(
        "--port-base",
        type=int,
        default=None,
        metavar="PORT",
        help="for a new state folder: ports PORT to PORT+7 (slurmctld, slurmd, OpenBao and its cluster port, the "
        "OpenID provider, the hub, the hub's API, the proxy's API) instead of the demo's, so that a second "
        "cluster runs beside the demo",
    )
    ports.add_argument(
        "--random-ports",
        action="store_true",
        help="for a new state folder: free loopback ports picked now, instead of the demo's",
    )
    verbs = dev.add_subparsers(dest="verb", required=True, metavar="VERB")
    up = verbs.add_parser("up", help="install what is missing, start every service (idempotent)")
    up.add_argument("--no-install", action="store_true", help="do not apt-get/npm install missing packages")
    up.add_argument("--no-demo", action="store_true", help="only the services: no demo projects, no hub")
    up.set_defaults(handler=_up)
    verbs.add_parser("down", help="stop every service of this cluster (by pid)").set_defaults(handler=_down)
    status = verbs.add_parser("status", help="per service: running or not, why not, and the fix")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=_status)
    verbs.add_parser("install", help="install missing Debian and Node packages only").set_defaults(
        handler=lambda args: install_all()
    )
    verbs.add_parser("env", help="print shell exports that point clients at this cluster").set_defaults(handler=_env)
    hub_parser = verbs.add_parser("hub", help="a JupyterHub that logs in through the local OpenID provider")
    hub_parser.add_argument("action", choices=["up", "down", "status"])
    hub_parser.set_defaults(handler=_hub)
    verbs.add_parser(
        "accounts", help="the OpenID provider's demo accounts, with passwords and one-time codes (demo only)"
    ).set_defaults(handler=_accounts)


def _cluster(args: argparse.Namespace) -> LocalCluster:
    try:
        layout = ClusterLayout.load_or_create(
            args.state_dir or default_state_dir(), random_ports=args.random_ports, port_base=args.port_base
        )
    except ValueError as error:
        raise RuntimeError(str(error)) from None
    return LocalCluster(layout)


def _statuses(args: argparse.Namespace, cluster: LocalCluster) -> list[ServiceStatus]:
    """The cluster's services, and the hub once one was set up in this state folder (by ``up`` or ``hub up``)."""
    statuses = cluster.status()
    if hub.config_file(cluster.layout).exists():
        running, detail = hub.status_line(cluster.layout)
        statuses.append(ServiceStatus("jupyterhub", running, detail, "" if running else _again(args, "hub up")))
    return statuses


def _again(args: argparse.Namespace, verb: str) -> str:
    """The command line of ``securehpc dev VERB`` for the same cluster, as it runs when pasted (commands.py)."""
    return commands.dev(verb, args.state_dir)


def _require_root() -> None:
    if os.geteuid() != 0:
        raise RuntimeError("the local cluster runs Slurm and munge as root: run this command as root")


def _up(args: argparse.Namespace) -> int:
    _require_root()
    cluster = _cluster(args)
    cluster.up(install=not args.no_install)
    layout = cluster.layout
    if not args.no_demo:
        demo.up(layout)
    for service in _statuses(args, cluster):
        print(f"{'up  ' if service.running else 'DOWN'}  {service.name:<10} {service.detail}")
    print(
        f"\nLocal cluster is up (state in {layout.state_dir}).\n"
        f"  Slurm:   export SLURM_CONF={layout.slurm_conf}   (partitions gpu, cpu; gres gpu:{layout.gpus})\n"
        f"  OpenBao: export VAULT_ADDR={layout.openbao_addr}   (root token: {layout.openbao_init_file})\n"
        f"  OpenID:  {layout.oidc_issuer}"
    )
    if not args.no_demo:
        _print_demo_guide(args, layout)
    print(f"Stop it with: {_again(args, 'down')}")
    return 0 if all(service.running for service in _statuses(args, cluster)) else 1


def _print_demo_guide(args: argparse.Namespace, layout: ClusterLayout) -> None:
    """What a newcomer does next, with commands that work when pasted (the README's first screen says the same)."""
    print(
        f"\nThe demo. Open {layout.hub_url}/ in a browser on this machine and press Sign in: the demo's identity\n"
        f"provider ({layout.oidc_issuer}) asks for a user name, password and one-time code:"
    )
    _accounts(args)
    print(
        "  (alice: data owner of sleep; bob: data scientist in sleep and cardio; carol: data owner of cardio;\n"
        "   mallory has no second factor: the hub refuses her, and says why.)\n"
        f"As bob, open {layout.hub_url}/hub/spawn/bob/cardio and press Start: JupyterLab opens in project cardio,\n"
        "with a banner naming the project and bob's role, the recordings shared from sleep under\n"
        "/datasets/sleep/psg (read-only) and the project's encrypted workspace in the file browser. Then try:\n"
        "  - in a notebook: import csv; list(csv.DictReader(open('/datasets/sleep/psg/night1_hypnogram.csv')))[:3]\n"
        "  - a download: the file browser has none; the URL /files/... answers 403, and it is an audit event\n"
        f"  - the admin commands, as root in a shell: {commands.source_env(args.state_dir)}\n"
        "    then: securehpc project list; securehpc project show sleep; securehpc audit tail -n 20 (README)"
    )
    print(
        f"The project portal: {portal.url(layout)} (members, datasets, shares, policies, sessions, the audit log;\n"
        f"  alice and carol manage their projects there, root-admin sets policies; its API: {portal.url(layout)}"
        "api/v1/openapi.json)"
    )
    print(f"Status: {_again(args, 'status')}")


def _down(args: argparse.Namespace) -> int:
    _require_root()
    cluster = _cluster(args)
    cluster.down()
    print(f"local cluster stopped; its state stays in {cluster.layout.state_dir} (projects, keys, logs)")
    left = [line for line in [*_demo_accounts_left(), cluster.fuse_left_changed()] if line]
    if left:
        print("Also left on this machine by `up`:")
        for line in left:
            print(f"  - {line}")
    print(f"To start over from nothing: the above, then rm -rf {shlex.quote(str(cluster.layout.state_dir))}")
    return 0


def _demo_accounts_left() -> list[str]:
    """The demo's Unix accounts and groups that exist (kept: the stores' files belong to them)."""
    users = [name for name in demo.people() if _exists(pwd.getpwnam, name)]
    groups = [name for name in demo.unix_groups() if _exists(grp.getgrnam, name)]
    if not users and not groups:
        return []
    undo = "; ".join([*(f"userdel {name}" for name in users), *(f"groupdel {name}" for name in groups)])
    return [
        f"the demo's Unix accounts {', '.join(users) or '-'} and groups {', '.join(groups) or '-'} (they own the "
        f"demo's stores and jobs; `up` uses them again): {undo}"
    ]


def _exists(lookup, name: str) -> bool:  # noqa: ANN001 - pwd.getpwnam or grp.getgrnam
    try:
        lookup(name)
    except KeyError:
        return False
    return True


def _status(args: argparse.Namespace) -> int:
    cluster = _cluster(args)
    statuses = _statuses(args, cluster)
    if args.json:
        json.dump([service.as_dict() for service in statuses], sys.stdout, indent=2)
        print()
    else:
        for service in statuses:
            print(f"{'up  ' if service.running else 'DOWN'}  {service.name:<10} {service.detail}")
            if service.fix:
                print(f"      {'':<10} fix: {service.fix}")
    return 0 if all(service.running for service in statuses) else 3


def _env(args: argparse.Namespace) -> int:
    """Exports for a root shell (``source <(securehpc dev env)``): this environment's programs first on PATH,
    Slurm's and OpenBao's clients, and the demo's site for the ``securehpc`` admin command line (its database,
    store root and audit log) with the demo admin's provisioning token, read from its 0600 file when the line
    runs (no secret is printed)."""
    layout = _cluster(args).layout
    site = hub.default_site(layout)
    exports = {
        "PATH": f'{shlex.quote(str(commands.bin_dir()))}:"$PATH"',
        **{name: shlex.quote(value) for name, value in layout.client_env().items()},
        DB_ENV: shlex.quote(site["SecureHPC.db_url"]),
        STORE_ROOT_ENV: shlex.quote(site["SecureHPC.store_root"]),
        AUDIT_LOG_ENV: shlex.quote(site["SecureHPC.audit_log"]),
        DEV_STATE_ENV: shlex.quote(str(layout.state_dir)),
    }
    for name, value in exports.items():
        print(f"export {name}={value}")
    token = openbao.token_file(layout, demo.PROVISIONER_POLICY)
    if token.exists():
        print(f'export VAULT_TOKEN="$(cat {shlex.quote(str(token))})"  # provisioning only: no key reads')
    else:
        print(f"# no admin token yet: run {_again(args, 'up')}")
    return 0


def _hub(args: argparse.Namespace) -> int:
    layout = _cluster(args).layout
    if args.action == "up":
        _require_root()
        demo.up(layout)  # the demo projects exist before anyone logs in
        print(f"JupyterHub is up at {layout.hub_url}/ (the demo's accounts: {_again(args, 'accounts')}).")
    elif args.action == "down":
        _require_root()
        hub.down(layout)
        print("JupyterHub stopped")
    running, detail = hub.status_line(layout)
    if args.action == "status":
        print(f"{'up  ' if running else 'DOWN'}  {'jupyterhub':<10} {detail}")
    return 0 if running or args.action == "down" else 3


def _accounts(args: argparse.Namespace) -> int:
    # Printed on purpose, for the person running the demo: these accounts exist only on the local provider.
    layout = _cluster(args).layout
    for account in oidc.accounts(layout):
        second = f"one-time code {account['otp']}" if account["otp"] else "no second factor"
        groups = " ".join(account["groups"])
        print(f"{account['username']:<12} password {account['password']:<18} {second:<22} {groups}")
    return 0
