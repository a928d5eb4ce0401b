"""``securehpc project|member|policy|dataset|key|audit ...``: the admin's and data owner's command line.

Run by a hub admin on the hub host. It acts as that admin unless ``--as USER`` makes it act with USER's
rights only; the audit event then records both. ``--json`` prints machine-readable output.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path

from ..audit import AuditLog, tail, verify
from ..config import SecureHPC, load_config
from ..keys import KeyStore, KeyStoreConfig
from ..principals import ProjectAccounts
from .db import open_database
from .service import Actor, ProjectService, Refused


def common_options() -> argparse.ArgumentParser:
    """Options every verb takes, before or after the verb (``securehpc --json project list`` or after)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--as",
        dest="as_user",
        metavar="USER",
        default=argparse.SUPPRESS,
        help="act with USER's rights only (the audit log records you and USER)",
    )
    parent.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    parent.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help="traitlets config file (default: /etc/securehpc/securehpc_config.py if it exists)",
    )
    return parent


def add_global_defaults(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(as_user=None, json=False, config=None)


def register(subparsers: argparse._SubParsersAction) -> None:
    common = common_options()

    def verb(group: argparse._SubParsersAction, name: str, handler, help_text: str) -> argparse.ArgumentParser:  # noqa: ANN001
        parser = group.add_parser(name, help=help_text, parents=[common])
        parser.set_defaults(handler=handler)
        return parser

    project = subparsers.add_parser("project", help="create, list and show projects").add_subparsers(
        dest="verb", required=True, metavar="VERB"
    )
    p = verb(project, "create", _project_create, "create a project with its key, policy and workspace store")
    p.add_argument("name")
    p.add_argument("--owner", required=True, metavar="USER", help="the project's first data owner")
    verb(project, "list", _project_list, "the projects you may see")
    verb(project, "show", _project_show, "members, datasets, shares and policy of a project").add_argument("name")

    member = subparsers.add_parser("member", help="add or remove project members").add_subparsers(
        dest="verb", required=True, metavar="VERB"
    )
    p = verb(member, "add", _member_add, "add a member, or change a member's role")
    p.add_argument("project")
    p.add_argument("user")
    p.add_argument("--role", required=True, help="data_owner, data_scientist or observer")
    p = verb(member, "remove", _member_remove, "remove a member")
    p.add_argument("project")
    p.add_argument("user")

    policy = subparsers.add_parser(
        "policy", help="show or set a project's policy (setting: admins only)"
    ).add_subparsers(dest="verb", required=True, metavar="VERB")
    verb(policy, "show", _policy_show, "the project's policy").add_argument("project")
    p = verb(policy, "set", _policy_set, "change settings, e.g. max_gpus=2 terminals=false")
    p.add_argument("project")
    p.add_argument("settings", nargs="+", metavar="KEY=VALUE")

    dataset = subparsers.add_parser("dataset", help="import, list and share datasets").add_subparsers(
        dest="verb", required=True, metavar="VERB"
    )
    p = verb(dataset, "import", _dataset_import, "encrypt a local folder into a new dataset (all or nothing)")
    p.add_argument("project")
    p.add_argument("dataset")
    p.add_argument("source", type=Path, metavar="SRC_DIR")
    verb(dataset, "list", _dataset_list, "a project's datasets and those shared into it").add_argument("project")
    p = verb(dataset, "share", _dataset_share, "offer PROJECT/DATASET read-only to another project")
    p.add_argument("dataset", metavar="PROJECT/DATASET")
    p.add_argument("--with", dest="other", required=True, metavar="OTHER")
    p = verb(dataset, "accept", _dataset_accept, "accept an offered dataset into project OTHER")
    p.add_argument("other", metavar="OTHER")
    p.add_argument("dataset", metavar="PROJECT/DATASET")
    p = verb(dataset, "revoke", _dataset_revoke, "withdraw a share")
    p.add_argument("dataset", metavar="PROJECT/DATASET")
    p.add_argument("--from", dest="other", required=True, metavar="OTHER")

    account = subparsers.add_parser(
        "account", help="the project accounts (principals) sessions run as (admins only)"
    ).add_subparsers(dest="verb", required=True, metavar="VERB")
    verb(
        account,
        "sync",
        _account_sync,
        "make every member's principal and project group, lock those of people who left, give workspaces to "
        "their group (idempotent)",
    )
    p = verb(account, "list", _account_list, "the principals a site's directory must hold")
    p.add_argument("project", nargs="?", default=None)

    key = subparsers.add_parser("key", help="session keys (for admins and tests)").add_subparsers(
        dest="verb", required=True, metavar="VERB"
    )
    verb(
        key,
        "sync",
        _key_sync,
        "rewrite every project's OpenBao policy and session token role (after an upgrade; provisioning token)",
    )
    p = verb(key, "wrap", _key_wrap, "print a wrapped single-use token for USER's session in PROJECT")
    p.add_argument("project")
    p.add_argument("--user", required=True)
    p.add_argument("--ttl", type=int, default=None, metavar="SECONDS", help="default: the project's key_ttl")

    audit = subparsers.add_parser("audit", help="check and read the audit log (admins only)").add_subparsers(
        dest="verb", required=True, metavar="VERB"
    )
    verb(audit, "verify", _audit_verify, "check the hash chain; name the first bad line")
    verb(audit, "tail", _audit_tail, "the last events").add_argument("-n", type=int, default=20, metavar="N")


def admin_name() -> str:
    """The person behind the command: the sudo caller if any, else the Unix user."""
    return os.environ.get("SUDO_USER") or getpass.getuser()


def _settings(args: argparse.Namespace) -> tuple[SecureHPC, object]:
    config = load_config(args.config)
    return SecureHPC(config=config), config


class KeysWhenNeeded:
    """The key store, opened at its first use: verbs that never ask OpenBao (listing, showing, members,
    policies) work without its URL or token; the others fail there with the key store's own message."""

    def __init__(self, config: object) -> None:
        self._config = config
        self._store: KeyStore | None = None

    def __getattr__(self, name: str) -> object:
        if self._store is None:
            self._store = KeyStore(KeyStoreConfig(config=self._config))
        return getattr(self._store, name)


def service(args: argparse.Namespace, *, new_site: bool = False) -> ProjectService:
    """The projects database of the configured site. Only ``new_site`` (``project create``) makes its folders
    and a new SQLite file; every other verb refuses a site that does not exist, and creates nothing."""
    settings, config = _settings(args)
    sqlite_file = Path(settings.db_url.removeprefix("sqlite:///")) if settings.db_url.startswith("sqlite:///") else None
    if new_site:
        Path(settings.store_root).mkdir(parents=True, exist_ok=True, mode=0o755)
        if sqlite_file is not None:
            sqlite_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    elif sqlite_file is not None and not sqlite_file.exists():
        raise FileNotFoundError(
            f"no projects database at {sqlite_file}: point c.SecureHPC.db_url (or $SECUREHPC_DB) at this site's "
            "database (the demo's: source <(securehpc dev env)), or make a new one with `securehpc project create`"
        )
    return ProjectService(
        sessions=open_database(settings.db_url),
        keys=KeysWhenNeeded(config),
        audit=AuditLog(Path(settings.audit_log)),
        store_root=Path(settings.store_root),
        actor=Actor(admin=admin_name(), as_user=args.as_user),
        accounts=ProjectAccounts(config=config).make_provisioner(),
    )


def emit(args: argparse.Namespace, data: object, text: str) -> int:
    if args.json:
        json.dump(data, sys.stdout, indent=2, default=str)
        print()
    else:
        print(text)
    return 0


def _project_create(args: argparse.Namespace) -> int:
    result = service(args, new_site=True).create_project(args.name, args.owner)
    return emit(args, result, f"created project {args.name} (data owner: {args.owner})")


def _project_list(args: argparse.Namespace) -> int:
    projects = service(args).list_projects()
    lines = [f"{p['name']}\t{p['role'] or '-'}" for p in projects] or ["(no projects)"]
    return emit(args, projects, "\n".join(lines))


def _project_show(args: argparse.Namespace) -> int:
    info = service(args).show_project(args.name)
    lines = [f"project {info['name']} (created {info['created_at']} by {info['created_by']})", "members:"]
    lines += [f"  {m['user']}\t{m['role']}" for m in info["members"]]
    lines += ["datasets:"] + [f"  {d}" for d in info["datasets"]]
    lines += ["shared out:"] + [f"  {s['dataset']} -> {s['with']} ({s['state']})" for s in info["shared_out"]]
    lines += ["shared in:"] + [f"  {d}" for d in info["shared_in"]]
    lines += ["policy:"] + [f"  {k} = {v}" for k, v in info["policy"].items()]
    return emit(args, info, "\n".join(lines))


def _member_add(args: argparse.Namespace) -> int:
    result = service(args).add_member(args.project, args.user, args.role)
    before = f" (was {result['previous_role']})" if result["previous_role"] else ""
    return emit(args, result, f"{args.user} is {result['role']} in {args.project}{before}")


def _member_remove(args: argparse.Namespace) -> int:
    result = service(args).remove_member(args.project, args.user)
    return emit(args, result, f"removed {args.user} ({result['removed_role']}) from {args.project}")


def _policy_show(args: argparse.Namespace) -> int:
    policy = service(args).show_policy(args.project)
    return emit(args, policy, "\n".join(f"{k} = {_text(v)}" for k, v in policy.items()))


def _policy_set(args: argparse.Namespace) -> int:
    policy = service(args).set_policy(args.project, args.settings)
    return emit(args, policy, "\n".join(f"{k} = {_text(v)}" for k, v in policy.items()))


def _dataset_import(args: argparse.Namespace) -> int:
    result = service(args).import_dataset(args.project, args.dataset, args.source)
    text = f"imported {result['dataset']}: {result['files']} files, {result['bytes']} bytes, verified"
    return emit(args, result, text)


def _dataset_list(args: argparse.Namespace) -> int:
    result = service(args).list_datasets(args.project)
    lines = [f"{d['dataset']}\t{d['files']} files\t{d['bytes']} bytes" for d in result["datasets"]]
    lines += [f"{s['dataset']}\tshared in ({s['state']})" for s in result["shared_in"]]
    return emit(args, result, "\n".join(lines) or "(no datasets)")


def _dataset_share(args: argparse.Namespace) -> int:
    result = service(args).share_dataset(args.dataset, args.other)
    text = f"offered {args.dataset} to {args.other}; a data owner of {args.other} must accept it"
    return emit(args, result, text)


def _dataset_accept(args: argparse.Namespace) -> int:
    result = service(args).accept_share(args.other, args.dataset)
    return emit(args, result, f"{args.other} now has {args.dataset} read-only")


def _dataset_revoke(args: argparse.Namespace) -> int:
    result = service(args).revoke_share(args.dataset, args.other)
    return emit(args, result, f"revoked {args.dataset} from {args.other}")


def _account_sync(args: argparse.Namespace) -> int:
    result = service(args).sync_accounts()
    text = (
        f"{len(result['principals'])} principals in place, {len(result['locked'])} locked, "
        f"{len(result['workspaces'])} workspaces given to their project's group"
    )
    return emit(args, result, text)


def _account_list(args: argparse.Namespace) -> int:
    rows = service(args).list_accounts(args.project)
    lines = [f"{r['principal']}\t{r['group']}\t{r['project']}\t{r['user']}\t{r['state']}" for r in rows]
    return emit(args, rows, "\n".join(lines) or "(no principals)")


def _key_sync(args: argparse.Namespace) -> int:
    result = service(args).sync_keys()
    names = ", ".join(result["projects"]) or "none"
    count = len(result["projects"])
    return emit(args, result, f"rewrote the OpenBao policy and token role of {count} projects: {names}")


def _key_wrap(args: argparse.Namespace) -> int:
    result = service(args).wrap_session_key(args.project, args.user, args.ttl)
    wrapped = result.pop("wrapped")
    # The one place a token is printed, on purpose: stdout only, for the admin or test that asked.
    result.update(token=wrapped.token, creation_path=wrapped.creation_path, accessor=wrapped.accessor,
                  expires_at=wrapped.expires_at.isoformat())  # fmt: skip
    return emit(args, result, wrapped.token)


def _audit_guard(args: argparse.Namespace) -> SecureHPC:
    settings = _settings(args)[0]
    if args.as_user is not None:
        reason = "only hub admins may read the audit log"
        AuditLog(Path(settings.audit_log)).append(
            actor=args.as_user, on_behalf_of=admin_name(), action="audit.read", obj="audit-log",
            outcome="denied", reason=reason,
        )  # fmt: skip
        raise Refused(f"{args.as_user} may not read the audit log: {reason}")
    return settings


def _audit_verify(args: argparse.Namespace) -> int:
    path = Path(_audit_guard(args).audit_log)
    if not path.exists():
        # Not "damaged": most often the wrong path. Said plainly, with both readings; still a failure.
        raise FileNotFoundError(
            f"no audit log at {path}: point c.SecureHPC.audit_log (or $SECUREHPC_AUDIT_LOG) at this site's log "
            "(the demo's: source <(securehpc dev env)); if this is the right path, the log was deleted"
        )
    result = verify(path)
    data = {"ok": result.ok, "lines": result.lines, "first_bad_line": result.first_bad_line, "problem": result.problem}
    text = f"audit log OK: {result.lines} events" if result.ok else f"audit log DAMAGED: {result.problem}"
    emit(args, data, text)
    return 0 if result.ok else 1


def _audit_tail(args: argparse.Namespace) -> int:
    events = tail(Path(_audit_guard(args).audit_log), args.n)
    lines = [
        f"{e['time']} {e['actor']}{' (by ' + e['on_behalf_of'] + ')' if e.get('on_behalf_of') else ''} "
        f"{e['action']} {e['object']} {e['outcome']}{': ' + e['reason'] if e.get('reason') else ''}"
        for e in events
    ]
    return emit(args, events, "\n".join(lines) or "(no events)")


def _text(value: object) -> str:
    if isinstance(value, list):
        return ",".join(value) or "none"
    return str(value).lower() if isinstance(value, bool) else str(value)
