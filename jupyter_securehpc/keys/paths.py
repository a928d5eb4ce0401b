"""Where keys live in the KV mount, and the ACL policies that say who may read them.

Project and dataset names become KV path segments and policy names, so they are checked here once more
(the project registry checks them first, with the same rules): letters and digits (Unicode, NFC), '-', '_'
and '.', starting with a letter or digit, at most 64 characters, no '..'. Anything else ('/', '*', '+',
quotes, braces, whitespace) could change what a policy path means. OpenBao lowercases policy names, so
policy names are lowercased here too; the registry refuses names that differ only by case.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..projects.names import InvalidName as ProjectNameError
from ..projects.names import validate_name
from .errors import InvalidName


def check_name(kind: str, value: object) -> str:
    """Return ``value`` if it can be a project or dataset name in key paths and policies, else refuse.

    The rules are the project registry's own (``projects.names``), applied once more at this boundary.
    """
    try:
        return validate_name(kind, value)
    except ProjectNameError as error:
        raise InvalidName(f"{kind} name {value!r} cannot be used for keys: {error}") from None


def policy_name(policy_prefix: str, project: str) -> str:
    """The name of ``project``'s ACL policy, in the lower case OpenBao stores it in."""
    return f"{policy_prefix}{check_name('project', project)}".lower()


@dataclass(frozen=True)
class KeyPaths:
    """Key paths inside the KV mount (without ``data/`` or ``metadata/``) for one configuration."""

    mount: str
    prefix: str

    def _join(self, *parts: str) -> str:
        return "/".join(part for part in (self.prefix, *parts) if part)

    def projects_dir(self) -> str:
        return self._join("projects")

    def workspace(self, project: str) -> str:
        return self._join("projects", check_name("project", project), "workspace")

    def datasets_dir(self, project: str) -> str:
        return self._join("projects", check_name("project", project), "datasets")

    def dataset(self, project: str, dataset: str) -> str:
        return f"{self.datasets_dir(project)}/{check_name('dataset', dataset)}"


def render_project_policy(paths: KeyPaths, project: str, shared_datasets: Sequence[tuple[str, str]]) -> str:
    """The ACL policy of ``project``: read its own keys and exactly the shared ones, nothing else."""
    check_name("project", project)
    data = f"{paths.mount}/data"
    lines = [
        f'# jupyter-securehpc: key access of project "{project}". Generated; rewritten whenever its shares change.',
        "# Its workspace key.",
        f'path "{data}/{paths.workspace(project)}" {{',
        '  capabilities = ["read"]',
        "}",
        "# The keys of datasets it owns ('+' is exactly one segment, and dataset names have no '/').",
        f'path "{data}/{paths.datasets_dir(project)}/+" {{',
        '  capabilities = ["read"]',
        "}",
    ]
    shared = sorted({(check_name("project", o), check_name("dataset", d)) for o, d in shared_datasets})
    for owner, dataset in shared:
        if owner == project:
            continue  # already covered by the rule above
        lines += [
            f"# Dataset {owner}/{dataset}, shared into this project.",
            f'path "{data}/{paths.dataset(owner, dataset)}" {{',
            '  capabilities = ["read"]',
            "}",
        ]
    lines += [
        # Session tokens lack the default policy, which is what normally lets a token revoke itself; the
        # launcher needs that to leave nothing reusable when a read fails half-way.
        "# A session token may revoke itself.",
        'path "auth/token/revoke-self" {',
        '  capabilities = ["update"]',
        "}",
    ]
    return "\n".join(lines) + "\n"


def render_hub_policy(paths: KeyPaths, policy_prefix: str) -> str:
    """The ACL policy the hub's token needs: manage keys and policies, issue and revoke session tokens.

    It never reads a key: reading (``KeyStore.read_workspace_key``) is for the admin-side import tool's own
    token. ``sudo`` on ``create-orphan`` lets the hub give a session token a project policy it does not hold
    itself; that also means this token can grant any key, so guard it like the keys.
    """
    mount, projects = paths.mount, paths.projects_dir()
    rules = [
        # ensure_mount: is the KV engine there (read), enable it (create/update), is it ready (config).
        (f"sys/mounts/{mount}", ["read", "create", "update"]),
        (f"{mount}/config", ["read"]),
        # create_*_key writes with cas=0; "update" lets OpenBao answer "exists" instead of "denied".
        (f"{mount}/data/{projects}/*", ["create", "update"]),
        # delete_*_key removes every version.
        (f"{mount}/metadata/{projects}/*", ["delete"]),
        (f"sys/policy/{policy_prefix}*", ["create", "read", "update", "delete"]),
        ("auth/token/create-orphan", ["create", "update", "sudo"]),
        ("auth/token/revoke-accessor", ["update"]),
    ]
    lines = ["# jupyter-securehpc hub: manage project keys and policies, issue wrapped session tokens."]
    for path, capabilities in rules:
        quoted = ", ".join(f'"{c}"' for c in capabilities)
        lines += [f'path "{path}" {{', f"  capabilities = [{quoted}]", "}"]
    return "\n".join(lines) + "\n"
