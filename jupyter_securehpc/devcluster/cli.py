"""``securehpc dev up|down|status|install|env``: the local cluster for the demo and the tests.

A plugin of ``securehpc`` (entry point ``dev`` of ``jupyter_securehpc.cli_plugins``): loaded only when the
verb is used, and usable only with the ``[dev]`` extra installed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import demo, hub, oidc
from .cluster import LocalCluster
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
    return LocalCluster(ClusterLayout.load_or_create(args.state_dir or default_state_dir()))


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
    for service in cluster.status():
        print(f"{'up  ' if service.running else 'DOWN'}  {service.name:<10} {service.detail}")
    print(
        f"\nLocal cluster is up (state in {layout.state_dir}).\n"
        f"  Slurm:   export SLURM_CONF={layout.slurm_conf}   (partitions gpu, cpu; gres gpu:{layout.gpus})\n"
        f"  OpenBao: export VAULT_ADDR={layout.openbao_addr}   (root token: {layout.openbao_init_file})\n"
        f"  OpenID:  {layout.oidc_issuer}"
    )
    if not args.no_demo:
        print(
            f"\nLog in at {layout.hub_url}/ and start the server named after a project (sleep or cardio):\n"
            "  alice: data owner of sleep; bob: data scientist in sleep and cardio; carol: data owner of cardio;\n"
            "  mallory signs in without a second factor and is refused. Passwords and one-time codes:"
        )
        _accounts(args)
    print("Stop it with: securehpc dev down")
    return 0 if all(service.running for service in cluster.status()) else 1


def _down(args: argparse.Namespace) -> int:
    _require_root()
    _cluster(args).down()
    print("local cluster stopped")
    return 0


def _status(args: argparse.Namespace) -> int:
    statuses = _cluster(args).status()
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
    for name, value in _cluster(args).layout.client_env().items():
        print(f"export {name}={value}")
    return 0


def _hub(args: argparse.Namespace) -> int:
    layout = _cluster(args).layout
    if args.action == "up":
        _require_root()
        demo.up(layout)  # the demo projects exist before anyone logs in
        print(f"JupyterHub is up at {layout.hub_url}/ (log in as a demo account: securehpc dev accounts).")
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
