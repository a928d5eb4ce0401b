"""The API's errors: ``{"error": CODE, "message": TEXT}`` with the HTTP status that says what kind they are."""

from __future__ import annotations

from ..audit import AuditError
from ..keys import KeyStoreError
from ..principals import AccountError
from ..projects.policy import InvalidPolicy
from ..projects.service import BadInput, Conflict, NotFound, NotMember, Refused
from ..stores.gocryptfs import StoreError
from ..vocabulary import InvalidName
from .hub import HubError

# status -> code, for every status the API answers with (openapi.py documents them).
CODES = {
    400: "bad_request",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    500: "internal",
    503: "unavailable",
}


class ApiError(Exception):
    """An answer other than success; ``message`` says what was wrong and what to do (never a secret)."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or CODES.get(status, "error")
        self.message = message

    def body(self) -> dict:
        return {"error": self.code, "message": self.message}


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def not_found(message: str) -> ApiError:
    return ApiError(404, message)


def unknown_project(name: str) -> str:
    """What the API says about a project that does not exist, and about one the caller is not a member of:
    the same words, so that a project's existence does not leak."""
    return f"project {name!r} does not exist or you are not one of its members (GET /projects lists yours)"


def from_exception(error: BaseException, *, project: str | None) -> ApiError | None:
    """The answer for an exception of ``ProjectService`` (None: not one it raises on purpose).

    ``project``: the project the request is about (a refusal for not being its member is answered as if it did
    not exist).
    """
    if isinstance(error, NotMember) and project is not None:
        return ApiError(404, unknown_project(project))
    if isinstance(error, Refused):
        return ApiError(403, str(error))
    if isinstance(error, NotFound):
        if error.kind == "project":
            return ApiError(404, unknown_project(error.name))
        return ApiError(404, str(error))
    if isinstance(error, Conflict):
        return ApiError(409, str(error))
    if isinstance(error, BadInput | InvalidName | InvalidPolicy):
        return ApiError(400, str(error))
    # AccountError: the principal's account could not be made or locked (ProjectAccounts); the database is unchanged.
    if isinstance(error, KeyStoreError | StoreError | AuditError | HubError | AccountError):
        return ApiError(503, f"the portal cannot complete this now: {error}")
    return None
