"""The signed job spec: the hub signs what a session may mount; the node verifies before it unwraps.

As the GWDG Secure HPC prolog checks the job script's signature, the launcher refuses a spec that the
hub's Ed25519 key did not sign. The envelope is JSON: ``{"spec": {...}, "signature": "<base64>"}``, the
signature taken over the spec's canonical JSON (sorted keys, no spaces). Nothing in it is secret.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

if TYPE_CHECKING:
    from .session.spec import SessionSpec


class SignatureError(ValueError):
    """The job spec is unsigned, badly formed, or not signed by the hub's key."""


def canonical(spec: dict) -> bytes:
    return json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign(spec: SessionSpec | dict, private_key: Ed25519PrivateKey) -> str:
    """The signed envelope, as JSON text, of a ``SessionSpec`` (its ``to_dict()``) or of a spec's dict."""
    if not isinstance(spec, dict):
        spec = spec.to_dict()
    signature = base64.b64encode(private_key.sign(canonical(spec))).decode()
    return json.dumps({"spec": spec, "signature": signature}, sort_keys=True)


def verify(envelope_text: str, public_key: Ed25519PublicKey) -> dict:
    """The spec inside a correctly signed envelope; SignatureError otherwise."""
    try:
        envelope = json.loads(envelope_text)
        spec, signature = envelope["spec"], base64.b64decode(envelope["signature"], validate=True)
    except (ValueError, KeyError, TypeError):
        raise SignatureError("the job spec is not a signed envelope ({spec, signature})") from None
    if not isinstance(spec, dict) or set(envelope) != {"spec", "signature"}:
        raise SignatureError("the job spec envelope must hold exactly a spec object and a signature")
    try:
        public_key.verify(signature, canonical(spec))
    except InvalidSignature:
        raise SignatureError("the job spec's signature does not match the hub's key: refusing it") from None
    return spec


def verify_session_spec(envelope_text: str, public_key: Ed25519PublicKey) -> SessionSpec:
    """The ``SessionSpec`` in a correctly signed envelope: SignatureError if the hub did not sign it, SpecError
    (``jupyter_securehpc.session``) if what it signed is not a valid spec."""
    from .session.spec import SessionSpec

    return SessionSpec.from_dict(verify(envelope_text, public_key))


def generate_key(path: Path) -> Ed25519PrivateKey:
    """Create the hub's signing key (PEM, mode 0600) and its public half beside it (``.pub``)."""
    from .util.files import atomic_write

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    atomic_write(path, pem, mode=0o600)
    atomic_write(path.with_suffix(".pub"), public_pem(key.public_key()), mode=0o644)
    return key


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{path} is not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(Path(path).read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(f"{path} is not an Ed25519 public key")
    return key
