"""Where keys live in the KV mount, and the ACL policies that say who may read them.

Project and dataset names become KV path segments and policy names, so they are checked here once more
(the project registry checks them first, with the same rules): letters and digits (Unicode, NFC), '-', '_'
and '.', starting with a letter or digit, at most 64 characters, no '..'. Anything else ('/', '*', '+',
quotes, braces, whitespace) could change what a policy path means. OpenBao lowercases policy names, so
policy names are lowercased here too; the registry refuses names that differ only by case.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..vocabulary import InvalidName as BadName
from ..vocabulary import dataset_parts, datasets_parts, validate_name, workspace_parts
from ..vocabulary.layout import PROJECTS
from .errors import InvalidName


def check_name(kind: str, value: object) -> str:
    """Return ``value`` if it can be a project or dataset name in key paths and policies, else refuse.

    The rules are the project registry's own (``vocabulary.names``), applied once more at this boundary.
    """
    try:
        return validate_name(kind, value)
    except BadName as error:
        raise InvalidName(f"{kind} name {value!r} cannot be used for keys: {error}") from None


# The longest session a project policy allows (``key_ttl`` in projects/policy.py): the projects' token roles
# cap their tokens at this, and the hub's policy refuses a longer response-wrapping TTL.
SESSION_MAX_TTL = 86400

# OpenBao's token role names (framework.GenericNameRegex): ASCII word characters, '-' and '.', starting and
# ending with a word character. '..' is refused as well: OpenBao accepts such a role, then fails every token
# it creates with it ("path cannot contain parent references").
_ROLE_SUFFIX = re.compile(r"[a-z0-9]([a-z0-9_.-]*[a-z0-9_])?")
_ROLE_NAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?")


def policy_name(policy_prefix: str, project: str) -> str:
    """The name of ``project``'s ACL policy, in the lower case OpenBao stores it in."""
    return f"{policy_prefix}{check_name('project', project)}".lower()


def role_name(policy_prefix: str, project: str) -> str:
    """The name of ``project``'s token role, through which the hub creates the project's session tokens.

    It is the policy name when that is a valid role name (``securehpc-project-sleep``). Project names that
    OpenBao's role names cannot hold (non-ASCII letters, a trailing '-' or '.') get ``<policy_prefix>_`` and
    a SHA-256 of the lowercased name instead: a project name starts with a letter or digit, so no plain
    name can ever look like such a hashed one, and the mapping stays one to one. The node compares the
    wrapping token's creation path with this name, so it must be the same on hub and nodes (it depends on
    ``KeyStoreConfig.policy_prefix`` only).
    """
    suffix = check_name("project", project).lower()
    if not _ROLE_SUFFIX.fullmatch(suffix):
        suffix = "_" + hashlib.sha256(suffix.encode("utf-8")).hexdigest()[:32]
    name = f"{policy_prefix}{suffix}"
    if not _ROLE_NAME.fullmatch(name) or ".." in name:
        raise InvalidName(
            f"token role name {name!r} of project {project!r} is not usable in OpenBao: start "
            "KeyStoreConfig.policy_prefix with a letter, digit or '_' and leave out '..'"
        )
    return name


def session_creation_path(policy_prefix: str, project: str) -> str:
    """The endpoint whose response-wrapped answer is a session token of ``project``.

    A wrapping token records it as its ``creation_path``, which ``sys/wrapping/lookup`` shows without using
    the token: that is how a node tells, before unwrapping, which project a token belongs to.
    """
    return f"auth/token/create/{role_name(policy_prefix, project)}"


def project_role(policy_prefix: str, project: str) -> dict:
    """The settings of ``project``'s token role (``auth/token/roles/<role_name>``).

    OpenBao enforces them on every token created through the role, whatever the creator asks for: exactly
    the project's policy (not even ``default``), an orphan (it outlives the hub's own token, and revoking
    the hub's token does not end sessions), never renewable, at most :data:`SESSION_MAX_TTL` seconds.
    """
    return {
        # A string, not a list: OpenBao splits it at commas, and a project policy name has none.
        "allowed_policies": policy_name(policy_prefix, project),
        "orphan": True,
        "renewable": False,
        "token_no_default_policy": True,
        "token_explicit_max_ttl": f"{SESSION_MAX_TTL}s",
        "token_type": "service",
    }


@dataclass(frozen=True)
class KeyPaths:
    """Key paths inside the KV mount (without ``data/`` or ``metadata/``) for one configuration.

    The keys lie like the stores they open (``vocabulary.layout``): ``<prefix>/projects/P/workspace`` and
    ``<prefix>/projects/P/datasets/D``.
    """

    mount: str
    prefix: str

    def _join(self, *parts: str) -> str:
        return "/".join(part for part in (self.prefix, *parts) if part)

    def projects_dir(self) -> str:
        return self._join(PROJECTS)

    def workspace(self, project: str) -> str:
        return self._join(*workspace_parts(check_name("project", project)))

    def datasets_dir(self, project: str) -> str:
        return self._join(*datasets_parts(check_name("project", project)))

    def dataset(self, project: str, dataset: str) -> str:
        return self._join(*dataset_parts(check_name("project", project), check_name("dataset", dataset)))


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


def _render_rules(header: Sequence[str], rules: Sequence[tuple[str, Sequence[str], dict[str, str]]]) -> str:
    lines = [f"# {line}" if line else "#" for line in header]
    for path, capabilities, extra in rules:
        quoted = ", ".join(f'"{c}"' for c in capabilities)
        lines += [f'path "{path}" {{', f"  capabilities = [{quoted}]"]
        lines += [f'  {name} = "{value}"' for name, value in extra.items()]
        lines.append("}")
    return "\n".join(lines) + "\n"


def render_hub_policy(paths: KeyPaths, policy_prefix: str) -> str:
    """The ACL policy of the hub's runtime token: issue response-wrapped session tokens, revoke them.

    The hub is online all the time and reachable from the network, so its token can do only this: create a
    token through a project's token role (which pins the project's policy and the token's limits), and only
    response-wrapped (``min_wrapping_ttl``: OpenBao refuses the request without a wrapping TTL, so the hub
    never holds a usable session token; ``max_wrapping_ttl``: no wrapping token outlives the longest
    session). It writes no key, policy or role and reads no key. It can still unwrap a wrapping token it
    just got (it holds it before the job does): the job's launcher then finds the token used and refuses
    to start, reporting an incident. Projects are provisioned with :func:`render_provisioner_policy`.
    """
    del paths  # the hub touches no key path; the argument keeps both renderers alike
    rules = [
        # wrap_session: POST auth/token/create/<role>, with X-Vault-Wrap-TTL.
        (
            f"auth/token/create/{policy_prefix}*",
            ["update"],
            {"min_wrapping_ttl": "1s", "max_wrapping_ttl": f"{SESSION_MAX_TTL}s"},
        ),
        # revoke_session at stop: the wrapping token and the session token inside it, by accessor.
        ("auth/token/revoke-accessor", ["update"], {}),
    ]
    header = [
        "jupyter-securehpc hub (runtime token): issue response-wrapped session tokens through the projects'",
        "token roles, and revoke them. No key, policy or role writes, no key reads, no other tokens.",
    ]
    return _render_rules(header, rules)


def render_provisioner_policy(paths: KeyPaths, policy_prefix: str) -> str:
    """The ACL policy of the provisioning token (the ``securehpc`` admin command line, ``ProjectService``).

    It creates and deletes project and dataset keys and writes and deletes each project's ACL policy and
    token role; it reads no key and creates no token. Whoever holds it can still write any rule into a
    ``<policy_prefix>*`` policy, so it is an administrator's credential: use it interactively, with a short
    TTL, not on the hub. Nothing in provisioning reads a key (an import generates the key and stores it);
    an admin-side tool that must read one (:meth:`KeyStore.read_workspace_key`) needs a token of its own.
    """
    mount, projects = paths.mount, paths.projects_dir()
    rules = [
        # ensure_mount: is the KV engine there (read), enable it (create/update), is it ready (config).
        (f"sys/mounts/{mount}", ["read", "create", "update"], {}),
        (f"{mount}/config", ["read"], {}),
        # create_*_key writes with cas=0; "update" lets OpenBao answer "exists" instead of "denied".
        (f"{mount}/data/{projects}/*", ["create", "update"], {}),
        # delete_*_key removes every version.
        (f"{mount}/metadata/{projects}/*", ["delete"], {}),
        # write_project_policy / delete_project_policy: the policy and the token role go together.
        (f"sys/policy/{policy_prefix}*", ["create", "update", "delete"], {}),
        (f"auth/token/roles/{policy_prefix}*", ["create", "update", "delete"], {}),
    ]
    header = [
        "jupyter-securehpc provisioning (the `securehpc` admin command line): create and delete project keys,",
        "write and delete the projects' ACL policies and session token roles. No key reads, no tokens.",
    ]
    return _render_rules(header, rules)


def render_portal_policy(paths: KeyPaths, policy_prefix: str) -> str:
    """The ACL policy of the project portal's token (the JupyterHub service, ``jupyter_securehpc.portal``).

    What the portal's operations need and nothing more: creating a project stores its new workspace key
    (``create`` only: OpenBao refuses to overwrite a key that exists, whatever the request says) and writes
    the project's policy and token role; accepting or revoking a share rewrites the receiving project's
    policy. It reads no key, deletes no key, policy or role (a project creation that fails after its key was
    stored leaves that key behind: see the README), enables no secrets engine and makes no token. Like the
    provisioning token it can write any rule into a ``<policy_prefix>*`` policy: keep it with the hub's user.
    """
    mount, projects = paths.mount, paths.projects_dir()
    rules = [
        # ensure_mount: the KV engine must be there (the admin command line enables it).
        (f"sys/mounts/{mount}", ["read"], {}),
        # create_project_key writes with cas=0; without "update" an existing key cannot be replaced at all.
        (f"{mount}/data/{projects}/*", ["create"], {}),
        # write_project_policy: the policy and the token role go together.
        (f"sys/policy/{policy_prefix}*", ["create", "update"], {}),
        (f"auth/token/roles/{policy_prefix}*", ["create", "update"], {}),
    ]
    header = [
        "jupyter-securehpc project portal (the JupyterHub service): create project keys (never replace one),",
        "write the projects' ACL policies and session token roles. No key reads, no deletes, no tokens.",
    ]
    return _render_rules(header, rules)
