"""Project and dataset keys in OpenBao (or HashiCorp Vault), handed to jobs as response-wrapped tokens.

Keys live in a KV version 2 secrets engine (``KeyStoreConfig.kv_mount``)::

    <prefix>/projects/<project>/workspace            the key of the project's encrypted workspace store
    <prefix>/projects/<project>/datasets/<dataset>   the key of one dataset the project owns

Each secret has one field, ``key``: 32 random bytes, base64. Each project has an ACL policy
``<policy_prefix><project>`` that grants ``read`` on its own keys and on the exact keys of the datasets
shared into it, and nothing else (see :func:`render_project_policy`), and a token role of (usually) the
same name (:func:`role_name`) that lets a token be created with that policy only: orphan, not renewable,
without the default policy, at most a day long.

Two identities talk to OpenBao. The *provisioning* token (:meth:`KeyStore.provisioner_policy`, the
``securehpc`` admin command line) creates and deletes keys and writes policies and roles. The hub's
*runtime* token (:meth:`KeyStore.hub_policy`) can only create tokens through the projects' roles, only
response-wrapped, and revoke them: it cannot give itself a new policy, and it never holds a usable token.

A session (an interactive server or a headless run), following the GWDG Secure HPC workflow:

1. The hub calls :meth:`KeyStore.wrap_session`: through the project's role (``auth/token/create/<role>``)
   OpenBao creates an orphan token that holds only the project policy, can be used exactly as many times as
   the job has keys to read, cannot be renewed and dies with the session's key TTL. The create call itself
   is response-wrapped, so the hub only ever holds a single-use *wrapping* token, which goes into the job.
2. The launcher on the node calls :meth:`KeyStore.unwrap_session` with the project from the signed job
   spec: it looks the wrapping token up (that does not use it) and refuses it, still unused, if it was
   used, revoked or expired, or if its creation path is not this project's role (a token of another
   project, a ``create-orphan`` token, a wrapped anything else). Only then it unwraps it once and reads the
   keys into memory. The last read uses the session token up, so nothing reusable remains; when something
   fails half-way the token revokes itself.
3. The spawner's stop path calls :meth:`KeyStore.revoke_session` (by accessor: it never keeps the token).

Used or expired? OpenBao answers a lookup of a used, a revoked and an expired wrapping token alike
("wrapping token is not valid or does not exist"). Only the caller knows when the token was issued: pass
``issued_at`` and ``ttl`` from the signed job spec (they are not secret). If that time has passed the
refusal is :class:`TokenExpired` (a long queue: start again); otherwise it is :class:`TokenUsedOrRevoked`,
and if the user did not use the token, someone else did. That is an incident to report.

What the split does not change: the hub can issue a session token for any project and, holding the
wrapping token first, unwrap it itself; the job's launcher then finds it used and refuses to start (an
incident to report). Whoever holds the provisioning token can write any rule into a project policy: it is
an administrator's credential, not the hub's.

Nothing here writes a key or a token to disk, a log, an argument vector or an error message. Keys are
``bytes`` in memory; log lines name projects, users and paths only.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import secrets
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import hvac
import hvac.exceptions
import requests

from ..vocabulary import DatasetRef
from .config import KeyStoreConfig
from .errors import (
    InvalidName,
    KeyExists,
    KeyMissing,
    KeyStoreConfigError,
    KeyStoreDenied,
    KeyStoreError,
    KeyStoreSealed,
    KeyStoreUnavailable,
    TokenExpired,
    TokenForeignPath,
    TokenUsedOrRevoked,
    WrappedTokenError,
)
from .paths import (
    SESSION_MAX_TTL,
    KeyPaths,
    check_name,
    policy_name,
    project_role,
    render_hub_policy,
    render_portal_policy,
    render_project_policy,
    render_provisioner_policy,
    role_name,
    session_creation_path,
)

log = logging.getLogger(__name__)

# What a refusal of the hub's or the admin's own token most likely means, per identity.
_PROVISIONER_HINT = (
    "check that the token has the capabilities of KeyStore.provisioner_policy() (the admin command line's "
    "provisioning token; the hub's runtime token may not do this)"
)
_HUB_HINT = "check that the token has the capabilities of KeyStore.hub_policy() (the hub's runtime token)"
_READ_HINT = "reading keys needs a token allowed to read them; the hub's and the provisioning token are not, on purpose"

KEY_BYTES = 32
# Where session tokens came from before the projects had token roles; nodes refuse wrapping tokens from it.
CREATE_ORPHAN_PATH = "auth/token/create-orphan"

# OpenBao's answer to a lookup or unwrap of a wrapping token that was used, revoked or has expired.
_TOKEN_GONE = "wrapping token is not valid or does not exist"  # noqa: S105 (a message)
_UNKNOWN_ROLE = "unknown role"
_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)")


def _check_user(user: object) -> str:
    if not isinstance(user, str) or not user or len(user) > 256 or not user.isprintable():
        raise InvalidName(f"user name {user!r} cannot be recorded on a session token: use 1-256 printable characters")
    return user


# --- results ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrappedSession:
    """What :meth:`KeyStore.wrap_session` hands the spawner. Only ``token`` is secret; it goes into the job.

    ``accessor`` is the wrapping token's accessor and ``wrapped_accessor`` that of the session token inside
    it: the spawner keeps both to revoke the session (:meth:`KeyStore.revoke_session`).
    """

    token: str = field(repr=False)
    accessor: str
    wrapped_accessor: str
    creation_path: str
    creation_time: datetime
    ttl: int

    @property
    def expires_at(self) -> datetime:
        return self.creation_time + timedelta(seconds=self.ttl)


@dataclass(frozen=True)
class SessionKeys:
    """The keys one session may use, in memory only. ``datasets`` is keyed ``str(DatasetRef)``: ``"OWNER/DATASET"``."""

    project: str
    user: str
    workspace: bytes = field(repr=False)
    datasets: dict[str, bytes] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        return f"SessionKeys(project={self.project!r}, user={self.user!r}, datasets={sorted(self.datasets)!r})"


# --- helpers ---------------------------------------------------------------------------------------------


def parse_time(value: str) -> datetime:
    """An RFC 3339 time as OpenBao writes it (nanoseconds, ``Z``) as an aware datetime."""
    match = _RFC3339.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"not an RFC 3339 time: {value!r}")
    whole, fraction, zone = match.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    offset = "+00:00" if zone == "Z" else zone
    return datetime.fromisoformat(f"{whole}.{micro:06d}{offset}").astimezone(timezone.utc)


def _as_datetime(value: datetime | float) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return datetime.fromtimestamp(float(value), tz=timezone.utc)


def _scrub(text: str, hidden: Iterable[str]) -> str:
    """Collapse whitespace and blank out any secret that might have slipped into a server's message."""
    text = " ".join(str(text).split())
    for secret in hidden:
        if secret:
            text = text.replace(secret, "[hidden]")
    return text


def _vault_message(exc: hvac.exceptions.VaultError) -> str:
    # args[0] is the server's message without hvac's "on METHOD URL" suffix.
    return str(exc.args[0]) if exc.args and exc.args[0] else type(exc).__name__


# --- the key store ---------------------------------------------------------------------------------------


class KeyStore:
    """Project and dataset keys, project policies and wrapped session tokens in one OpenBao server."""

    def __init__(self, config: KeyStoreConfig | None = None) -> None:
        self.config = config if config is not None else KeyStoreConfig()
        self.config.check()
        self.url = self.config.url.strip().rstrip("/")
        self.paths = KeyPaths(self.config.kv_mount, self.config.prefix)
        self._client = self._make_client(self.config.token)

    def __repr__(self) -> str:
        return f"KeyStore(url={self.url!r}, kv_mount={self.paths.mount!r}, prefix={self.paths.prefix!r})"

    # -- plumbing -----------------------------------------------------------------------------------------
    def _make_client(self, token: str) -> hvac.Client:
        """A client with ``token`` ("" for none: hvac would otherwise read VAULT_TOKEN or ~/.vault-token)."""
        config = self.config
        verify: bool | str = config.tls_verify
        if config.tls_verify and config.ca_cert:
            verify = config.ca_cert
        # False, not None: with None hvac falls back to VAULT_CLIENT_CERT, and our configuration decides.
        cert = (config.client_cert, config.client_key) if config.client_cert else False
        return hvac.Client(url=self.url, token=token, verify=verify, cert=cert, timeout=config.timeout)

    @contextmanager
    def _errors(self, doing: str, *, hidden: Iterable[str] = (), denied_hint: str = "") -> Iterator[None]:
        """Turn hvac and requests exceptions into key store errors that say what to do and hold no secret."""
        hidden = (self.config.token, *hidden)
        url = self.url
        try:
            yield
        except requests.exceptions.SSLError as exc:
            raise KeyStoreUnavailable(
                f"TLS with OpenBao at {url} failed while {doing} ({type(exc).__name__}): check "
                "KeyStoreConfig.ca_cert (VAULT_CACERT), client_cert/client_key and tls_verify"
            ) from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise KeyStoreUnavailable(
                f"cannot reach OpenBao at {url} while {doing} ({type(exc).__name__}): check that the server runs "
                "and that KeyStoreConfig.url (VAULT_ADDR) points at it, then retry"
            ) from None
        except requests.exceptions.RequestException as exc:
            raise KeyStoreUnavailable(
                f"request to OpenBao at {url} failed while {doing} ({type(exc).__name__}): retry later"
            ) from None
        except hvac.exceptions.VaultNotInitialized:
            raise KeyStoreSealed(
                f"OpenBao at {url} is not initialised: initialise and unseal it (bao operator init, "
                "bao operator unseal) and retry"
            ) from None
        except hvac.exceptions.VaultDown as exc:
            message = _vault_message(exc)
            if "sealed" in message.lower():
                raise KeyStoreSealed(f"OpenBao at {url} is sealed: unseal it (bao operator unseal) and retry") from None
            raise KeyStoreUnavailable(
                f"OpenBao at {url} is not serving while {doing} ({_scrub(message, hidden)}): retry, or point "
                "KeyStoreConfig.url at the active node"
            ) from None
        except (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized) as exc:
            hint = denied_hint or _PROVISIONER_HINT
            raise KeyStoreDenied(
                f"OpenBao at {url} denied {doing} ({_scrub(_vault_message(exc), hidden)}): {hint}"
            ) from None
        except hvac.exceptions.VaultError as exc:
            raise KeyStoreError(
                f"OpenBao at {url} refused {doing} ({type(exc).__name__}: {_scrub(_vault_message(exc), hidden)})"
            ) from None

    def _data_url(self, path: str) -> str:
        return f"/v1/{self.paths.mount}/data/{path}"

    def _metadata_url(self, path: str) -> str:
        return f"/v1/{self.paths.mount}/metadata/{path}"

    def policy_name(self, project: str) -> str:
        return policy_name(self.config.policy_prefix, project)

    def role_name(self, project: str) -> str:
        return role_name(self.config.policy_prefix, project)

    def session_path(self, project: str) -> str:
        """The creation path of every wrapping token this hub issues for ``project``'s sessions."""
        return session_creation_path(self.config.policy_prefix, project)

    # -- the secrets engine -------------------------------------------------------------------------------
    def ensure_mount(self) -> bool:
        """Enable KV version 2 at ``kv_mount`` unless it is there. Returns whether it was enabled now."""
        mount = self.paths.mount
        info = self._mount_info()
        if info is None:
            with self._errors(f"enabling a KV version 2 secrets engine at {mount}/"):
                try:
                    self._client.sys.enable_secrets_engine(
                        "kv",
                        path=mount,
                        options={"version": "2"},
                        description="jupyter-securehpc project and dataset keys",
                    )
                except hvac.exceptions.InvalidRequest as exc:
                    if "already in use" not in _vault_message(exc):
                        raise
                    info = self._mount_info()  # someone else enabled it meanwhile
            if info is None:
                log.info("enabled a KV version 2 secrets engine at %s/ on %s", mount, self.url)
                self._wait_kv_ready()
                return True
        kind, version = info.get("type"), str((info.get("options") or {}).get("version", "1"))
        if kind != "kv" or version != "2":
            raise KeyStoreConfigError(
                f"OpenBao at {self.url} has a {kind} (version {version}) secrets engine at {mount}/, not KV version 2:"
                " choose another KeyStoreConfig.kv_mount"
            )
        return False

    def _mount_info(self) -> dict | None:
        mount = self.paths.mount
        with self._errors(f"reading the secrets engine at {mount}/"):
            try:
                return self._client.adapter.get(f"/v1/sys/mounts/{mount}")
            except hvac.exceptions.InvalidRequest as exc:
                if "no secret engine mount" in _vault_message(exc).lower():
                    return None
                raise

    def _wait_kv_ready(self, timeout: float = 10.0) -> None:
        # A new KV v2 engine answers "upgrading" for a moment before it accepts writes.
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._client.adapter.get(f"/v1/{self.paths.mount}/config")
                return
            except hvac.exceptions.VaultError:
                if time.monotonic() >= deadline:
                    return  # later calls report whatever is still wrong
                time.sleep(0.1)

    # -- keys ---------------------------------------------------------------------------------------------
    def create_project_key(self, project: str, key: bytes | None = None) -> None:
        """Store the project's workspace key (random unless given); refuse (:class:`KeyExists`) if it exists.

        Callers that encrypt first pass the key they generated, so that an interrupted creation leaves no
        key behind in OpenBao, only ciphertext nobody can read.
        """
        self._create_key(self.paths.workspace(project), f"workspace key of project {project}", key)

    def create_dataset_key(self, project: str, dataset: str, key: bytes | None = None) -> None:
        """Store the key of a dataset owned by ``project`` (random unless given); refuse if it exists."""
        self._create_key(self.paths.dataset(project, dataset), f"key of dataset {project}/{dataset}", key)

    def delete_project_key(self, project: str) -> None:
        """Delete the workspace key, all versions (rolls back a failed creation). Idempotent."""
        self._delete_key(self.paths.workspace(project), f"workspace key of project {project}")

    def delete_dataset_key(self, project: str, dataset: str) -> None:
        """Delete a dataset key, all versions. Idempotent."""
        self._delete_key(self.paths.dataset(project, dataset), f"key of dataset {project}/{dataset}")

    def read_workspace_key(self, project: str) -> bytes:
        """The workspace key, for an admin-side tool with a token of its own (keep it in memory only).

        Neither the hub's runtime token nor the provisioning token may read keys.
        """
        path = self.paths.workspace(project)
        return self._read_key(self._client, path, f"workspace key of project {project}", denied_hint=_READ_HINT)

    def read_dataset_key(self, project: str, dataset: str) -> bytes:
        """A dataset key, for an admin-side tool with a token of its own (keep it in memory only)."""
        path = self.paths.dataset(project, dataset)
        return self._read_key(self._client, path, f"key of dataset {project}/{dataset}", denied_hint=_READ_HINT)

    def _create_key(self, path: str, what: str, key: bytes | None = None) -> None:
        where = f"{self.paths.mount}/{path}"
        if key is not None and len(key) != KEY_BYTES:
            raise ValueError(f"a {what} must be {KEY_BYTES} random bytes")
        encoded = base64.b64encode(key if key is not None else secrets.token_bytes(KEY_BYTES)).decode("ascii")
        with self._errors(f"creating the {what} at {where}"):
            try:
                # cas=0: write only if no version exists, so a key (and the data it encrypts) is never replaced.
                self._client.adapter.post(self._data_url(path), json={"options": {"cas": 0}, "data": {"key": encoded}})
            except hvac.exceptions.InvalidRequest as exc:
                if "check-and-set" not in _vault_message(exc):
                    raise
                raise KeyExists(
                    f"the {what} already exists at {where}: keys are never replaced (the data it encrypts would be "
                    "lost); delete it only together with its store"
                ) from None
        log.info("created the %s at %s", what, where)

    def _delete_key(self, path: str, what: str) -> None:
        where = f"{self.paths.mount}/{path}"
        with self._errors(f"deleting the {what} at {where}"):
            self._client.adapter.delete(self._metadata_url(path))
        log.info("deleted the %s at %s (all versions)", what, where)

    def _read_key(
        self, client: hvac.Client, path: str, what: str, *, hidden: Iterable[str] = (), denied_hint: str = ""
    ) -> bytes:
        where = f"{self.paths.mount}/{path}"
        with self._errors(f"reading the {what} at {where}", hidden=hidden, denied_hint=denied_hint):
            try:
                response = client.adapter.get(self._data_url(path))
            except hvac.exceptions.InvalidPath:
                raise KeyMissing(f"there is no {what} at {where} on {self.url}: was it created?") from None
        encoded = ((response.get("data") or {}).get("data") or {}).get("key")
        if not isinstance(encoded, str):
            raise KeyMissing(f"the {what} at {where} on {self.url} has no 'key' field (deleted?)")
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise KeyStoreError(f"the {what} at {where} is not valid base64: it was not written by us") from None
        if len(key) != KEY_BYTES:
            raise KeyStoreError(
                f"the {what} at {where} has {len(key)} bytes, not {KEY_BYTES}: it was not written by us"
            )
        log.debug("read the %s at %s", what, where)
        return key

    # -- policies -----------------------------------------------------------------------------------------
    def render_project_policy(self, project: str, shared_datasets: Sequence[tuple[str, str]] = ()) -> str:
        return render_project_policy(self.paths, project, shared_datasets)

    def write_project_policy(self, project: str, shared_datasets: Sequence[tuple[str, str]] = ()) -> None:
        """Write (or rewrite, whenever shares change) the project's policy and its token role.

        ``shared_datasets`` are ``(owner_project, dataset)`` pairs shared into ``project``. The role is
        written every time too, so that projects provisioned before roles existed get theirs on the next
        write (``securehpc key sync`` rewrites them all). Provisioning token only.
        """
        name, role = self.policy_name(project), self.role_name(project)
        text = self.render_project_policy(project, shared_datasets)
        hint = _PROVISIONER_HINT
        with self._errors(f"writing policy {name}", denied_hint=hint):
            self._client.sys.create_or_update_policy(name, text)
        # After the policy: a role is only usable once the policy it names exists.
        with self._errors(f"writing token role {role} of project {project}", denied_hint=hint):
            self._client.adapter.post(
                f"/v1/auth/token/roles/{role}", json=project_role(self.config.policy_prefix, project)
            )
        log.info(
            "wrote policy %s and token role %s for project %s (%d shared datasets)",
            name,
            role,
            project,
            len(set(shared_datasets)),
        )

    def delete_project_policy(self, project: str) -> None:
        """Delete the project's token role, then its policy (tokens that hold it lose access at once). Idempotent."""
        name, role = self.policy_name(project), self.role_name(project)
        hint = _PROVISIONER_HINT
        # The role first: without it no new session token can be made, even while the policy still exists.
        with self._errors(f"deleting token role {role} of project {project}", denied_hint=hint):
            self._client.adapter.delete(f"/v1/auth/token/roles/{role}")
        with self._errors(f"deleting policy {name}", denied_hint=hint):
            self._client.sys.delete_policy(name)
        log.info("deleted token role %s and policy %s of project %s", role, name, project)

    def hub_policy(self) -> str:
        """The ACL policy of the hub's runtime token (see :func:`render_hub_policy`)."""
        return render_hub_policy(self.paths, self.config.policy_prefix)

    def provisioner_policy(self) -> str:
        """The ACL policy of the admin command line's provisioning token (see :func:`render_provisioner_policy`)."""
        return render_provisioner_policy(self.paths, self.config.policy_prefix)

    def portal_policy(self) -> str:
        """The ACL policy of the project portal's token (see :func:`render_portal_policy`)."""
        return render_portal_policy(self.paths, self.config.policy_prefix)

    # -- sessions: the hub side ---------------------------------------------------------------------------
    def wrap_session(
        self, user: str, project: str, ttl_seconds: int, *, datasets: Sequence[tuple[str, str]] = ()
    ) -> WrappedSession:
        """Issue a response-wrapped session token for ``user`` in ``project`` (the hub's runtime token).

        The token is created through the project's token role, so its wrapping token's creation path names
        the project (what the node checks before unwrapping) and OpenBao, not this code, limits what it
        holds. ``datasets`` are the shared ``(owner_project, dataset)`` pairs the job will read (the same list goes
        into the job spec): the token can be used exactly ``1 + len(datasets)`` times.
        """
        _check_user(user)
        policy, role = self.policy_name(project), self.role_name(project)
        datasets = [(check_name("project", o), check_name("dataset", d)) for o, d in datasets]
        if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int) or not 1 <= ttl_seconds <= SESSION_MAX_TTL:
            raise ValueError(
                f"the key TTL must be a whole number of seconds from 1 to {SESSION_MAX_TTL}, got {ttl_seconds!r}"
            )
        ttl = f"{ttl_seconds}s"
        body = {
            "policies": [policy],
            "no_default_policy": True,
            "num_uses": 1 + len(datasets),
            "ttl": ttl,
            "explicit_max_ttl": ttl,
            "renewable": False,
            "meta": {"user": user, "project": project},
            "display_name": re.sub(r"[^a-z0-9-]+", "-", f"securehpc-{project}-{user}".lower())[:100],
        }
        doing = f"creating a session token for user {user} in project {project} through token role {role}"
        hint = f"{_HUB_HINT}, written for KeyStoreConfig.policy_prefix {self.config.policy_prefix!r}"
        with self._errors(doing, denied_hint=hint):
            try:
                # Through the project's role: OpenBao itself pins the policy and the token's limits.
                response = self._client.adapter.post(f"/v1/auth/token/create/{role}", json=body, wrap_ttl=ttl)
            except hvac.exceptions.InvalidRequest as exc:
                if _UNKNOWN_ROLE not in _vault_message(exc):
                    raise
                raise KeyMissing(
                    f"project {project} has no policy {policy} with session token role {role} on {self.url} "
                    "(projects set up by a version before token roles have only the policy): run `securehpc key "
                    "sync` with the provisioning token to write every project's OpenBao policy and role, then "
                    "start the session again"
                ) from None
        wrap = response.get("wrap_info") if isinstance(response, dict) else None
        if not wrap:
            self._discard_unwrapped(response, project)
            raise KeyStoreError(
                f"OpenBao at {self.url} answered without wrapping the session token (the token was revoked): "
                "does a proxy in between drop the X-Vault-Wrap-TTL header?"
            )
        session = WrappedSession(
            token=wrap["token"],
            accessor=wrap["accessor"],
            wrapped_accessor=wrap.get("wrapped_accessor", ""),
            creation_path=wrap["creation_path"],
            creation_time=parse_time(wrap["creation_time"]),
            ttl=int(wrap["ttl"]),
        )
        log.info(
            "issued a wrapped session token for user %s in project %s (%d dataset keys, TTL %ds)",
            user,
            project,
            len(datasets),
            ttl_seconds,
        )
        return session

    def _discard_unwrapped(self, response: object, project: str) -> None:
        auth = response.get("auth") if isinstance(response, dict) else None
        accessor = (auth or {}).get("accessor")
        if accessor:
            try:
                self.revoke_wrapping(accessor)
            except KeyStoreError as exc:
                log.error("could not revoke an unwrapped session token of project %s: %s", project, exc)

    def revoke_wrapping(self, accessor: str, *, wrapped_accessor: str | None = None) -> bool:
        """Revoke a wrapping token (and, if given, the session token inside it) by accessor.

        Both are needed to end a session for sure: revoking the wrapping token leaves an already unwrapped
        session token alive, and revoking only the session token still lets the wrapping token unwrap (to a
        dead token). Returns whether any of them still existed. Idempotent.
        """
        existed = False
        for what, value in (("wrapping token", accessor), ("session token", wrapped_accessor)):
            if not value:
                continue
            with self._errors(f"revoking a {what} by accessor", hidden=(value,), denied_hint=_HUB_HINT):
                try:
                    response = self._client.adapter.post("/v1/auth/token/revoke-accessor", json={"accessor": value})
                except hvac.exceptions.InvalidRequest as exc:
                    if "invalid accessor" not in _vault_message(exc):
                        raise
                    continue
            # OpenBao answers an unknown accessor with 200 and a warning, a revocation with 204 (no body).
            warnings = (response.get("warnings") or []) if isinstance(response, dict) else []
            if not any("no token found" in str(warning).lower() for warning in warnings):
                existed = True
        return existed

    def revoke_session(self, session: WrappedSession) -> bool:
        """The spawner's stop path: make ``session`` unusable, whether or not it was unwrapped."""
        return self.revoke_wrapping(session.accessor, wrapped_accessor=session.wrapped_accessor or None)

    # -- sessions: the node side --------------------------------------------------------------------------
    def lookup(
        self,
        wrapping_token: str,
        *,
        project: str,
        issued_at: datetime | float | None = None,
        ttl: float | None = None,
    ) -> dict:
        """Look a wrapping token up without using it; refuse it if it cannot be a session token of ``project``.

        ``project``, ``issued_at`` (datetime or Unix time) and ``ttl`` (seconds) come from the signed job
        spec. The token's creation path must be ``project``'s token role exactly (:meth:`session_path`):
        a token of another project, from ``create-orphan`` or from anywhere else is refused here, before
        anything uses it, so that its owner still has it. ``issued_at``/``ttl`` let an expired token be told
        from a used one (OpenBao answers both alike). Returns the lookup data (``creation_path``,
        ``creation_time``, ``creation_ttl``; nothing secret).
        """
        expected_path = self.session_path(project)
        anonymous = self._make_client("")  # lookup needs no token, and the node has none to spare
        try:
            with self._errors("looking up a wrapping token", hidden=(wrapping_token,)):
                try:
                    response = anonymous.adapter.post("/v1/sys/wrapping/lookup", json={"token": wrapping_token})
                except hvac.exceptions.InvalidRequest as exc:
                    if _TOKEN_GONE not in _vault_message(exc):
                        raise
                    raise self._token_gone(issued_at, ttl) from None
        finally:
            anonymous.adapter.close()
        data = response["data"]
        found = data.get("creation_path")
        if found != expected_path:
            log.warning(
                "refused a wrapping token created at %s for a job of project %s (expected %s); it was not used",
                found,
                project,
                expected_path,
            )
            if isinstance(found, str) and found.startswith("auth/token/create/"):
                what = "it was issued for the sessions of another project, or not by this hub"
            else:
                what = "it was not issued by the hub for a session"
            raise TokenForeignPath(
                f"the wrapping token was created at {found}, expected {expected_path} (project {project}): {what}. "
                "It was not used, so whoever it was meant for can still use it. Report this"
            )
        expires = parse_time(data["creation_time"]) + timedelta(seconds=int(data["creation_ttl"]))
        if expires <= datetime.now(timezone.utc):
            raise TokenExpired(
                f"the wrapping token expired at {expires:%Y-%m-%d %H:%M:%S} UTC: start the session again; if the job "
                "waited in the queue that long, ask for a longer key TTL"
            )
        return data

    def _token_gone(self, issued_at: datetime | float | None, ttl: float | None) -> WrappedTokenError:
        if issued_at is not None and ttl is not None:
            expires = _as_datetime(issued_at) + timedelta(seconds=float(ttl))
            if expires <= datetime.now(timezone.utc):
                return TokenExpired(
                    f"the wrapping token expired at {expires:%Y-%m-%d %H:%M:%S} UTC: start the session again; if the "
                    "job waited in the queue that long, ask for a longer key TTL"
                )
            note = ""
        else:
            note = " (the job spec gave no issue time, so it may also have expired)"
        log.warning("refused a wrapping token that was already used or revoked%s", note)
        return TokenUsedOrRevoked(
            "the wrapping token was already used or revoked: if you did not use it, someone else did — report this"
            + note
        )

    def unwrap_session(
        self,
        wrapping_token: str,
        *,
        project: str,
        datasets: Sequence[tuple[str, str]] = (),
        issued_at: datetime | float | None = None,
        ttl: float | None = None,
    ) -> SessionKeys:
        """Check, unwrap (once) and use a wrapped session token: the workspace key and the listed datasets' keys.

        ``project``, ``datasets`` (shared ``(owner_project, dataset)`` pairs) and ``issued_at``/``ttl`` come
        from the signed job spec (see :meth:`lookup`, which refuses a token of another project before it is
        used). Once unwrapped, the session token is used up (or revoked) when this returns or raises.
        """
        wanted = [(check_name("project", o), check_name("dataset", d)) for o, d in datasets]
        check_name("project", project)
        self.lookup(wrapping_token, project=project, issued_at=issued_at, ttl=ttl)
        auth = self._unwrap(wrapping_token, issued_at, ttl)
        session_token = auth["client_token"]
        session = self._make_client(session_token)
        planned = 1 + len(wanted)
        uses = auth.get("num_uses")
        reads = 0
        try:
            meta = auth.get("metadata") or {}
            owner, user = meta.get("project"), meta.get("user") or ""
            # The role checked at the lookup already says so; the token's own label must agree.
            if owner != project:
                raise WrappedTokenError(
                    f"the wrapping token was issued for project {owner!r}, but this job is for project {project!r}:"
                    " report this"
                )
            check_name("project", owner)
            if [name.lower() for name in auth.get("token_policies") or []] != [self.policy_name(owner)]:
                raise WrappedTokenError(
                    f"the session token of project {owner} has policies {auth.get('token_policies')!r}, expected "
                    f"[{self.policy_name(owner)!r}]: check that KeyStoreConfig.policy_prefix is the same on hub and "
                    "nodes"
                )
            if uses is not None and int(uses) != planned:
                raise WrappedTokenError(
                    f"the session token of project {owner} allows {uses} key reads, but the job spec lists {planned} "
                    "keys (workspace and datasets): token and job spec do not belong together; report this"
                )
            hidden = (session_token, wrapping_token)
            workspace = self._read_key(
                session,
                self.paths.workspace(owner),
                f"workspace key of project {owner}",
                hidden=hidden,
                denied_hint=f"the policy {self.policy_name(owner)} does not grant it: rewrite the project's policy",
            )
            reads += 1
            keys: dict[str, bytes] = {}
            for dataset_owner, dataset in wanted:
                keys[str(DatasetRef(dataset_owner, dataset))] = self._read_key(
                    session,
                    self.paths.dataset(dataset_owner, dataset),
                    f"key of dataset {dataset_owner}/{dataset}",
                    hidden=hidden,
                    denied_hint=f"the dataset is not shared into project {owner} (policy {self.policy_name(owner)})",
                )
                reads += 1
        finally:
            if uses is None or reads != int(uses):
                self._revoke_self(session, owner_hint=str((auth.get("metadata") or {}).get("project")))
            session.adapter.close()
        log.info("released the keys of project %s to user %s (%d shared datasets)", owner, user, len(keys))
        return SessionKeys(project=owner, user=user, workspace=workspace, datasets=keys)

    def _unwrap(self, wrapping_token: str, issued_at: datetime | float | None, ttl: float | None) -> dict:
        client = self._make_client(wrapping_token)
        try:
            with self._errors("unwrapping a session token", hidden=(wrapping_token,)):
                try:
                    response = client.adapter.post("/v1/sys/wrapping/unwrap")
                except hvac.exceptions.InvalidRequest as exc:
                    if _TOKEN_GONE not in _vault_message(exc):
                        raise
                    # Valid at the lookup a moment ago: someone was faster (or it expired just now).
                    raise self._token_gone(issued_at, ttl) from None
        finally:
            client.adapter.close()
        auth = response.get("auth") if isinstance(response, dict) else None
        if not auth or not auth.get("client_token"):
            raise WrappedTokenError("the wrapping token did not hold a session token: it was not issued by the hub")
        return auth

    def _revoke_self(self, session: hvac.Client, *, owner_hint: str) -> None:
        """Best effort: never raises, since it runs while another error may be on its way out."""
        try:
            session.adapter.post("/v1/auth/token/revoke-self")
            log.info("revoked the unused rest of a session token of project %s", owner_hint)
        except hvac.exceptions.Forbidden:
            # Its last use was spent on this very request, which revokes it too; or its policy predates the
            # revoke-self rule, and it ends with its TTL.
            log.debug("session token of project %s was used up by revoking it", owner_hint)
        except (hvac.exceptions.VaultError, requests.exceptions.RequestException) as exc:
            log.warning(
                "could not revoke a session token of project %s (%s): it ends with its TTL",
                owner_hint,
                type(exc).__name__,
            )
