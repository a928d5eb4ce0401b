"""Configuration of the key store: which OpenBao/Vault server, how to reach it, where the keys live.

Defaults follow the ``bao``/``vault`` command line's environment variables (``VAULT_ADDR``, ``VAULT_TOKEN``,
``VAULT_CACERT``, ``VAULT_CLIENT_CERT``, ``VAULT_CLIENT_KEY``, ``VAULT_SKIP_VERIFY``), so an admin who can use
the CLI can point the hub at the same server.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from traitlets import Bool, Float, TraitError, Unicode, default, validate
from traitlets.config import Configurable

from .errors import KeyStoreConfigError

_TRUTHY = {"1", "t", "true", "y", "yes", "on"}
_SEGMENT = re.compile(r"[A-Za-z0-9_.-]+")
_POLICY_PREFIX = re.compile(r"[a-z0-9_.-]*")


def _check_url(value: str) -> str:
    value = value.strip().rstrip("/")
    if not value:
        return value
    parts = urlsplit(value)
    if parts.username or parts.password:
        # Not echoed: it holds credentials.
        raise TraitError(
            "KeyStoreConfig.url must not contain credentials: put the token in KeyStoreConfig.token (VAULT_TOKEN)"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query or parts.fragment:
        raise TraitError(
            f"KeyStoreConfig.url must be the server's base URL, such as https://openbao.example.org:8200, "
            f"got {value!r} (no path: /v1 is added for each request)"
        )
    return value


def _check_mount(value: str) -> str:
    if "/" in value:
        raise TraitError(
            f"KeyStoreConfig.kv_mount must be a single path segment, got {value!r}: "
            f"use {value.strip('/').split('/')[0] or 'securehpc'!r}, and KeyStoreConfig.prefix for a path inside it"
        )
    if not _SEGMENT.fullmatch(value) or value in (".", ".."):
        raise TraitError(
            f"KeyStoreConfig.kv_mount {value!r} is not a usable mount name: use letters, digits, '-', '_' or '.'"
        )
    return value


def _check_prefix(value: str) -> str:
    if not value:
        return value
    if value.startswith("/") or value.endswith("/"):
        raise TraitError(
            f"KeyStoreConfig.prefix must not start or end with '/', got {value!r}: use {value.strip('/')!r}"
        )
    for segment in value.split("/"):
        if segment in ("", ".", "..") or not _SEGMENT.fullmatch(segment):
            raise TraitError(
                f"KeyStoreConfig.prefix {value!r} has an unusable segment {segment!r}: segments are letters, "
                "digits, '-', '_' or '.', never empty, '.' or '..'"
            )
    return value


def _check_policy_prefix(value: str) -> str:
    if not _POLICY_PREFIX.fullmatch(value):
        raise TraitError(
            f"KeyStoreConfig.policy_prefix {value!r} is not usable: OpenBao lowercases policy names, so use "
            "lowercase letters, digits, '-', '_' or '.'"
        )
    if value[:1] in ("-", ".") or ".." in value:
        # It also starts the projects' token role names, which OpenBao restricts further.
        raise TraitError(
            f"KeyStoreConfig.policy_prefix {value!r} is not usable as the start of an OpenBao token role name: "
            "start it with a lowercase letter, digit or '_', and leave out '..'"
        )
    return value


def _check_timeout(value: float) -> float:
    if not value > 0:
        raise TraitError(f"KeyStoreConfig.timeout must be a positive number of seconds, got {value!r}")
    return value


class KeyStoreConfig(Configurable):
    """Where the key server is, how to reach it, and where in it this hub keeps its keys."""

    url = Unicode(
        help="""Base URL of the OpenBao or Vault server, such as ``https://openbao.example.org:8200``.
        Defaults to ``$VAULT_ADDR``.""",
    ).tag(config=True)

    token = Unicode(
        help="""Token to authenticate with: on the hub, a token with ``KeyStore.hub_policy()`` (issues
        wrapped session tokens only); for the ``securehpc`` admin command line, one with
        ``KeyStore.provisioner_policy()``. Defaults to ``$VAULT_TOKEN``; never logged. Nodes need none: they
        only use wrapping tokens.""",
    ).tag(config=True)

    kv_mount = Unicode(
        "securehpc",
        help="Path of the KV version 2 secrets engine that holds the keys (one segment, no slashes).",
    ).tag(config=True)

    prefix = Unicode(
        "",
        help="Path inside ``kv_mount`` under which this hub keeps its keys, so that several hubs can share a server.",
    ).tag(config=True)

    policy_prefix = Unicode(
        "securehpc-project-",
        help="""Prefix of the per-project ACL policy and token role names (``<policy_prefix><project>``); the
        same on hub, nodes and the admin command line.""",
    ).tag(config=True)

    ca_cert = Unicode(
        help="PEM file of the CA that signed the server's certificate. Defaults to ``$VAULT_CACERT``.",
    ).tag(config=True)

    client_cert = Unicode(
        help="PEM client certificate for servers that require mutual TLS. Defaults to ``$VAULT_CLIENT_CERT``.",
    ).tag(config=True)

    client_key = Unicode(
        help="PEM private key of ``client_cert``. Defaults to ``$VAULT_CLIENT_KEY``.",
    ).tag(config=True)

    tls_verify = Bool(
        help="Whether to verify the server's TLS certificate; False only for tests (``$VAULT_SKIP_VERIFY`` set).",
    ).tag(config=True)

    timeout = Float(
        10.0,
        help="Seconds to wait for each request to the key server before giving up.",
    ).tag(config=True)

    @default("url")
    def _url_default(self) -> str:
        return os.environ.get("VAULT_ADDR", "")

    @default("token")
    def _token_default(self) -> str:
        return os.environ.get("VAULT_TOKEN", "")

    @default("ca_cert")
    def _ca_cert_default(self) -> str:
        return os.environ.get("VAULT_CACERT", "")

    @default("client_cert")
    def _client_cert_default(self) -> str:
        return os.environ.get("VAULT_CLIENT_CERT", "")

    @default("client_key")
    def _client_key_default(self) -> str:
        return os.environ.get("VAULT_CLIENT_KEY", "")

    @default("tls_verify")
    def _tls_verify_default(self) -> bool:
        return os.environ.get("VAULT_SKIP_VERIFY", "").strip().lower() not in _TRUTHY

    @validate("url")
    def _validate_url(self, proposal: dict) -> str:
        return _check_url(proposal["value"])

    @validate("kv_mount")
    def _validate_mount(self, proposal: dict) -> str:
        return _check_mount(proposal["value"])

    @validate("prefix")
    def _validate_prefix(self, proposal: dict) -> str:
        return _check_prefix(proposal["value"])

    @validate("policy_prefix")
    def _validate_policy_prefix(self, proposal: dict) -> str:
        return _check_policy_prefix(proposal["value"])

    @validate("timeout")
    def _validate_timeout(self, proposal: dict) -> float:
        return _check_timeout(proposal["value"])

    def check(self) -> None:
        """Refuse an incomplete or inconsistent configuration, naming the option and the fix.

        Also checks values that came from the environment (traitlets does not validate computed defaults).
        """
        try:
            _check_url(self.url)
            _check_mount(self.kv_mount)
            _check_prefix(self.prefix)
            _check_policy_prefix(self.policy_prefix)
            _check_timeout(self.timeout)
        except TraitError as exc:
            raise KeyStoreConfigError(str(exc)) from None
        if not self.url.strip():
            raise KeyStoreConfigError("KeyStoreConfig.url is empty: set it, or VAULT_ADDR, to the OpenBao server")
        if bool(self.client_cert) != bool(self.client_key):
            raise KeyStoreConfigError(
                "KeyStoreConfig.client_cert and client_key (VAULT_CLIENT_CERT, VAULT_CLIENT_KEY) go together: "
                "set both or neither"
            )
        for name in ("ca_cert", "client_cert", "client_key"):
            value = getattr(self, name)
            if value and not Path(value).is_file():
                raise KeyStoreConfigError(f"KeyStoreConfig.{name} {value!r} is not a file: fix the path or unset it")

    def __repr__(self) -> str:
        # The token is deliberately absent.
        return f"KeyStoreConfig(url={self.url!r}, kv_mount={self.kv_mount!r}, prefix={self.prefix!r})"
