"""What a login must show, as a pure function: an accepted second factor (project roles: ``projects/sync.py``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def mfa_problem(claims: Mapping[str, Any], required_amr: Iterable[str], required_acr: Iterable[str]) -> str | None:
    """Why these ID token claims do not show an accepted second factor, or None when they do.

    Each configured check must pass: ``amr`` must share a value with ``required_amr`` (when that is not empty),
    and ``acr`` must be one of ``required_acr`` (when that is not empty).
    """
    required_amr, required_acr = set(required_amr), list(required_acr)
    if required_amr:
        amr = claims.get("amr")
        if amr is None:
            return "the ID token has no amr claim (the provider did not say how the person signed in)"
        if not isinstance(amr, list) or not all(isinstance(value, str) for value in amr):
            return f"the ID token's amr claim is not a list of strings: {amr!r}"
        if not required_amr.intersection(amr):
            return f"amr {sorted(amr)} contains none of the accepted methods {sorted(required_amr)}"
    if required_acr:
        acr = claims.get("acr")
        if acr is None:
            return "the ID token has no acr claim"
        if acr not in required_acr:
            return f"acr {acr!r} is not one of the accepted levels {required_acr}"
    return None
