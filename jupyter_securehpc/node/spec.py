"""The node's side of the session spec: accept it only if the hub signed it, then parse it.

The spec itself (``SessionSpec``, its one parser) is the session contract's (``jupyter_securehpc.session``).
Here the launcher finds the spec and the hub's public key and verifies the signature before anything else,
as the GWDG Secure HPC prolog checks the job script's signature; only then is a token looked at.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .. import jobspec
from ..session.env import HUB_PUBLIC_KEY_ENV, SESSION_SPEC_ENV
from ..session.spec import SessionSpec, SpecError
from .errors import EX_NOPERM, EX_UNAVAILABLE, EX_USAGE, LaunchError

__all__ = ["DEFAULT_PUBLIC_KEY", "SessionSpec", "SpecError", "hub_public_key", "load_spec"]

DEFAULT_PUBLIC_KEY = Path("/etc/securehpc/hub-signing.pub")


def hub_public_key() -> Ed25519PublicKey:
    """The hub's spec-signing key: ``$SECUREHPC_HUB_PUBLIC_KEY`` or /etc/securehpc/hub-signing.pub."""
    path = Path(os.environ.get(HUB_PUBLIC_KEY_ENV) or DEFAULT_PUBLIC_KEY)
    try:
        return jobspec.load_public_key(path)
    except FileNotFoundError:
        raise LaunchError(
            f"no hub public key at {path}: install the hub's hub-signing.pub there (or set ${HUB_PUBLIC_KEY_ENV});"
            " without it no job spec can be trusted",
            EX_UNAVAILABLE,
        ) from None
    except (ValueError, jobspec.SignatureError) as error:
        raise LaunchError(f"the hub public key {path} is not usable: {error}", EX_UNAVAILABLE) from None


def load_spec(path: Path | None) -> SessionSpec:
    """The session spec, only if the hub signed it (checked before any token is looked at)."""
    source = path or os.environ.get(SESSION_SPEC_ENV)
    if not source:
        raise LaunchError(f"no session spec: pass --spec FILE or set ${SESSION_SPEC_ENV}", EX_USAGE)
    try:
        text = Path(source).read_text()
    except OSError as error:
        raise LaunchError(f"cannot read the session spec {source}: {error.strerror}", EX_USAGE) from None
    try:
        spec = jobspec.verify_session_spec(text, hub_public_key())
    except jobspec.SignatureError as error:
        raise LaunchError(f"{error} ({source})", EX_NOPERM) from None
    return spec
