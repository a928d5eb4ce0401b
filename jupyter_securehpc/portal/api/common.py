"""What every API handler checks before it calls ``ProjectService``: names, roles, the body's fields.

Malformed requests are answered 400 here, before the service is called: nothing is read or written and
nothing is recorded. Requests that are well-formed but name something unknown (404), clash with what exists
(409) or are refused (403) are decided by ``ProjectService``, which records them in the audit log.
"""

from __future__ import annotations

from typing import Any

from ...projects.roles import Role
from ...projects.service import BadInput, validate_username
from ...vocabulary import InvalidName, validate_name
from ..errors import ApiError


def project_name(value: object, what: str = "project") -> str:
    return _name("project", value, what)


def dataset_name(value: object, what: str = "dataset") -> str:
    return _name("dataset", value, what)


def _name(kind: str, value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ApiError(400, f"{what} must be a {kind} name (a string), got {type(value).__name__}")
    try:
        return validate_name(kind, value)
    except InvalidName as error:
        raise ApiError(400, f"{what}: {error}") from None


def user_name(value: object, what: str = "user") -> str:
    if not isinstance(value, str):
        raise ApiError(400, f"{what} must be a user name (a string), got {type(value).__name__}")
    try:
        return validate_username(value)
    except BadInput as error:
        raise ApiError(400, f"{what}: {error}") from None


def role(value: object) -> str:
    if not isinstance(value, str):
        raise ApiError(400, f"role must be one of {', '.join(r.value for r in Role)}")
    try:
        return Role.parse(value).value
    except ValueError as error:
        raise ApiError(400, str(error)) from None


def fields(data: dict, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """The body's fields: every ``required`` one present, nothing beyond ``required`` and ``optional``."""
    unknown = sorted(set(data) - set(required) - set(optional))
    if unknown:
        raise ApiError(400, f"unknown field(s) {', '.join(map(repr, unknown))}: send {', '.join(required)}")
    missing = [name for name in required if name not in data]
    if missing:
        raise ApiError(400, f"missing field(s) {', '.join(missing)}")
    return data


def query(handler: Any, allowed: tuple[str, ...]) -> dict[str, str]:
    """The request's query arguments (each at most once), refusing any not in ``allowed``."""
    arguments = handler.request.query_arguments
    unknown = sorted(set(arguments) - set(allowed))
    if unknown:
        raise ApiError(400, f"unknown query parameter(s) {', '.join(unknown)}: use {', '.join(allowed) or 'none'}")
    out = {}
    for name, values in arguments.items():
        if len(values) != 1:
            raise ApiError(400, f"give {name} once")
        try:
            out[name] = values[0].decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, f"{name} is not valid UTF-8") from None
    return out
