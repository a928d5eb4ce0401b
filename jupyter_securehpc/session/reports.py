"""What a job may tell the hub: the payloads of the node launcher's reports, built and parsed in one place.

The launcher (``node/hubreport.py``) builds them with ``port_report``, ``stage_report``, ``audit_report`` and
``activity_report``; the hub (``spawner/api.py``) parses them with the ``parse_*`` function next to each, strictly:
anything but the exact shape is a ``ReportError``. Reports are untrusted input at the hub: the job runs on a node
the user's code shares. So: small, allow-listed fields, no control characters, nothing that becomes a spawner
attribute by name. The report credential and what the hub does with the events are ``spawner/reports.py``'s.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from ..audit import OUTCOMES

MAX_PORT_BODY = 64
MAX_STAGE_BODY = 64
MAX_ACTIVITY_BODY = 16
MAX_AUDIT_BODY = 64 * 1024
MAX_AUDIT_EVENTS = 100

# ``Authorization: securehpc-report <secret>``: a scheme of its own, so that no hub token (``token``,
# ``bearer``) is ever taken for a report credential, nor the report secret for a hub token. JupyterHub
# scrubs Authorization headers from its logs; the secret is never in a URL.
REPORT_SCHEME = "securehpc-report"

# The reports, each posted to ``<report URL>/<kind>`` (spawner/api.py takes them).
KIND_PORT = "port"
KIND_STAGE = "stage"
KIND_AUDIT = "audit"
KIND_ACTIVITY = "activity"

# The start stages, in the order a session goes through them; the spawner turns them into progress messages.
STAGE_KEY = "key"  # the session's keys are unwrapped
STAGE_MOUNTING = "mounting"  # the sandbox starts and mounts the stores
STAGE_STARTING = "starting"  # the stores are mounted; the Jupyter server starts
STAGES = (STAGE_KEY, STAGE_MOUNTING, STAGE_STARTING)

# The fields of an event in the session's own audit log (``jupyter_securehpc.audit``). The chain fields
# (seq, time, prev, hash) belong to that log; the hub keeps seq and time as details and chains anew.
SESSION_EVENT_FIELDS = frozenset(
    {"seq", "time", "actor", "on_behalf_of", "action", "object", "project", "outcome", "reason", "details",
     "prev", "hash"}
)  # fmt: skip
_ACTION = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
_METHOD = re.compile(r"[A-Z]{1,16}")
_ROLE = re.compile(r"[a-z][a-z_]{0,31}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
MAX_TEXT = 1024


class ReportError(ValueError):
    """The report is not exactly what this endpoint takes; the message says what was wrong."""


@dataclass(frozen=True)
class SessionEvent:
    """One audit event reported by a session's server extension, checked field by field."""

    actor: str
    action: str
    obj: str
    outcome: str
    reason: str | None
    details: dict[str, Any] = field(default_factory=dict)
    project: str | None = None  # as the session named it; bind_events requires the server's own


def _json(body: bytes, limit: int) -> Any:
    if len(body) > limit:
        raise ReportError(f"the report is longer than {limit} bytes")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ReportError("the report is not JSON") from None


def parse_port_report(body: bytes) -> int:
    """The port in a report, or ReportError. Deliberately strict: one key, one JSON integer."""
    data = _json(body, MAX_PORT_BODY)
    if not isinstance(data, dict) or list(data) != ["port"]:
        raise ReportError('the report must be exactly {"port": N}')
    port = data["port"]
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ReportError("the port must be an integer from 1 to 65535")
    return port


def parse_stage_report(body: bytes) -> str:
    """The stage in ``{"stage": NAME}``, NAME one of STAGES."""
    data = _json(body, MAX_STAGE_BODY)
    if not isinstance(data, dict) or list(data) != ["stage"]:
        raise ReportError('the report must be exactly {"stage": NAME}')
    if data["stage"] not in STAGES:
        raise ReportError(f"the stage must be one of {', '.join(STAGES)}")
    return data["stage"]


def _text(event: dict, name: str, *, optional: bool = False) -> str | None:
    value = event.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT or _CONTROL.search(value):
        raise ReportError(f"event field {name!r} must be text of 1 to {MAX_TEXT} printable characters")
    return value


def _details(raw: Any) -> dict[str, Any]:
    """The details a server extension's refusal carries: the request's method, the role, the HTTP status."""
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not set(raw) <= {"method", "role", "status"}:
        raise ReportError("event details may only hold method, role and status")
    details: dict[str, Any] = {}
    if "method" in raw:
        if not isinstance(raw["method"], str) or not _METHOD.fullmatch(raw["method"]):
            raise ReportError("event detail 'method' must be an HTTP method")
        details["method"] = raw["method"]
    if "role" in raw:
        if not isinstance(raw["role"], str) or not _ROLE.fullmatch(raw["role"]):
            raise ReportError("event detail 'role' must be a role name")
        details["role"] = raw["role"]
    if "status" in raw:
        status = raw["status"]
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise ReportError("event detail 'status' must be an HTTP status code")
        details["status"] = status
    return details


def _event(raw: Any) -> SessionEvent:
    if not isinstance(raw, dict):
        raise ReportError("each event must be a JSON object")
    unknown = set(raw) - SESSION_EVENT_FIELDS
    if unknown:
        raise ReportError(f"unknown event fields: {', '.join(sorted(map(str, unknown)))[:200]}")
    action = raw.get("action")
    if not isinstance(action, str) or not _ACTION.fullmatch(action):
        raise ReportError("event field 'action' must be a lower-case action name such as contents.download")
    if raw.get("outcome") not in OUTCOMES:
        raise ReportError(f"event field 'outcome' must be one of {', '.join(sorted(OUTCOMES))}")
    details = _details(raw.get("details"))
    seq = raw.get("seq")
    if seq is not None:
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise ReportError("event field 'seq' must be a non-negative integer")
        details["session_seq"] = seq
    if raw.get("time") is not None:
        details["session_time"] = _text(raw, "time")
    if raw.get("on_behalf_of") is not None:
        # A session acts for its own user only; nobody else's name may enter the central log through it.
        raise ReportError("event field 'on_behalf_of' must be empty: a session acts for its own user only")
    return SessionEvent(
        actor=_text(raw, "actor"),
        action=action,
        obj=_text(raw, "object"),
        outcome=raw["outcome"],
        reason=_text(raw, "reason", optional=True),
        details=details,
        project=_text(raw, "project", optional=True),
    )


def parse_audit_report(body: bytes) -> list[SessionEvent]:
    """The events of ``{"events": [...]}``: 1 to MAX_AUDIT_EVENTS session audit events, all valid or none."""
    data = _json(body, MAX_AUDIT_BODY)
    if not isinstance(data, dict) or list(data) != ["events"]:
        raise ReportError('the report must be exactly {"events": [...]}')
    events = data["events"]
    if not isinstance(events, list) or not 1 <= len(events) <= MAX_AUDIT_EVENTS:
        raise ReportError(f"the report must carry 1 to {MAX_AUDIT_EVENTS} events")
    return [_event(raw) for raw in events]


def parse_activity_report(body: bytes) -> None:
    """``{}`` and nothing else: the hub records its own clock, so a client cannot send a time (no covert channel
    through timestamps, no dates in the future that keep an idle server alive)."""
    data = _json(body, MAX_ACTIVITY_BODY)
    if not isinstance(data, dict) or data:
        raise ReportError("the report must be exactly {}: the hub records the time itself")


# --- the launcher's side: the payloads, exactly as the parsers above take them ----------------------------


def port_report(port: int) -> dict:
    return {"port": port}


def stage_report(stage: str) -> dict:
    return {"stage": stage}


def audit_report(events: list[dict]) -> dict:
    """The server extension's events, as it wrote them to its audit pipe (the hub checks each)."""
    return {"events": events}


def activity_report() -> dict:
    return {}


# --- headless runs: what ``securehpc-node run`` tells the hub about its run (runs/api.py takes it) ------------
#
# Posted to ``<run report URL>/<kind>`` with the run's own report secret. The runner in the sandbox tells the
# launcher its progress and its end on a pipe, in the same shapes, parsed by the same functions: whatever the
# sandbox writes, only these few numbers and names reach the hub (never cell outputs, which are project data).

KIND_RUN_PROGRESS = "progress"
KIND_RUN_END = "end"
KIND_RUN_MESSAGE = "message"
# Not a report but the job's one question, asked once when it starts: the answer is the run's signed spec and its
# wrapped key (``run_start_answer``), which the batch script never holds.
KIND_RUN_START = "start"
MAX_RUN_PROGRESS_BODY = 128
MAX_RUN_END_BODY = 8 * 1024
MAX_RUN_MESSAGE_BODY = 1024
MAX_CELLS = 1_000_000
# How a run can end, as the launcher says it: "refused" is the notebook's parameters cell refusing a name.
RUN_OUTCOMES = ("succeeded", "failed", "refused")
# Why a run failed before or outside a cell, by name (the hub words them; no free text from the sandbox).
RUN_PROBLEMS = (
    "notebook_missing",  # no such notebook in the workspace
    "outside_workspace",  # the path leads out of the workspace (a symbolic link)
    "not_a_notebook",  # the file is not a notebook papermill can read
    "output_exists",  # runs/RUN_ID exists already: a run is never executed twice
    "kernel",  # the kernel does not exist or did not start
    "sandbox",  # the sandbox or the runner ended without saying why
    "start",  # the launcher did not get as far as the sandbox (no spec or key from the hub, a store, the node)
)
_EXCEPTION = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,127}")


def _is_name(value: object) -> bool:
    """A parameter name as ``spec.validate_parameters`` takes it: a Python identifier of at most 64 characters."""
    return isinstance(value, str) and value.isidentifier() and len(value) <= 64


@dataclass(frozen=True)
class RunEnd:
    """How a run ended, as far as the sandbox's side knows it (Slurm's view is the hub's)."""

    outcome: str
    exit_code: int | None = None
    cell: int | None = None  # the index of the cell that raised, on a notebook error
    exception: str | None = None  # the exception's class name (never its message: that is project data)
    problem: str | None = None  # one of RUN_PROBLEMS
    unknown: tuple[str, ...] = ()  # refused parameter names ...
    known: tuple[str, ...] = ()  # ... and those the notebook's parameters cell defines

    def as_dict(self) -> dict:
        data: dict[str, Any] = {"outcome": self.outcome}
        for name in ("exit_code", "cell", "exception", "problem"):
            if getattr(self, name) is not None:
                data[name] = getattr(self, name)
        if self.outcome == "refused":
            data["unknown"], data["known"] = list(self.unknown), list(self.known)
        return data


def _int_field(data: dict, name: str, low: int, high: int) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ReportError(f"{name} must be an integer from {low} to {high}")
    return value


def parse_run_progress(body: bytes) -> tuple[int, int]:
    """(cells done, cells in the notebook) of ``{"cells_done": N, "cells_total": M}``."""
    data = _json(body, MAX_RUN_PROGRESS_BODY)
    if not isinstance(data, dict) or sorted(data) != ["cells_done", "cells_total"]:
        raise ReportError('the report must be exactly {"cells_done": N, "cells_total": M}')
    total = _int_field(data, "cells_total", 0, MAX_CELLS)
    done = _int_field(data, "cells_done", 0, MAX_CELLS)
    if done > total:
        raise ReportError("cells_done must not exceed cells_total")
    return done, total


def _names(data: dict, key: str) -> tuple[str, ...]:
    names = data.get(key)
    if not isinstance(names, list) or len(names) > 100 or not all(_is_name(name) for name in names):
        raise ReportError(f"{key} must be a list of at most 100 parameter names")
    return tuple(names)


def parse_run_end(body: bytes) -> RunEnd:
    """A run's end: its outcome and, by outcome, only the fields that say why (``RunEnd``)."""
    data = _json(body, MAX_RUN_END_BODY)
    if not isinstance(data, dict) or data.get("outcome") not in RUN_OUTCOMES:
        raise ReportError(f"the report must be an object with an outcome of {', '.join(RUN_OUTCOMES)}")
    outcome = data["outcome"]
    allowed = {"succeeded": {"exit_code"}, "failed": {"exit_code", "cell", "exception", "problem"},
               "refused": {"exit_code", "unknown", "known"}}[outcome]  # fmt: skip
    unknown_fields = set(data) - allowed - {"outcome"}
    if unknown_fields:
        raise ReportError(f"a {outcome} report takes no {', '.join(sorted(unknown_fields))}")
    exception, problem = data.get("exception"), data.get("problem")
    if exception is not None and (not isinstance(exception, str) or not _EXCEPTION.fullmatch(exception)):
        raise ReportError("exception must be an exception's class name")
    if problem is not None and problem not in RUN_PROBLEMS:
        raise ReportError(f"problem must be one of {', '.join(RUN_PROBLEMS)}")
    refused = outcome == "refused"
    return RunEnd(
        outcome=outcome,
        exit_code=_int_field(data, "exit_code", 0, 255),
        cell=_int_field(data, "cell", 0, MAX_CELLS),
        exception=exception,
        problem=problem,
        unknown=_names(data, "unknown") if refused else (),
        known=_names(data, "known") if refused else (),
    )


def parse_run_message(body: bytes) -> str:
    """One message of the launcher (``{"message": TEXT}``): printable, at most MAX_TEXT characters."""
    data = _json(body, MAX_RUN_MESSAGE_BODY)
    if not isinstance(data, dict) or list(data) != ["message"]:
        raise ReportError('the report must be exactly {"message": TEXT}')
    text = data["message"]
    if not isinstance(text, str) or not text or len(text) > 500 or _CONTROL.search(text):
        raise ReportError("the message must be 1 to 500 printable characters")
    return text


def run_progress_report(done: int, total: int) -> dict:
    return {"cells_done": done, "cells_total": total}


def run_end_report(end: RunEnd) -> dict:
    return end.as_dict()


def run_message_report(text: str) -> dict:
    return {"message": text}


# --- a run's start: the hub's answer to ``<run report URL>/start`` (runs/api.py), read by the launcher -----------

# The signed spec may carry an uploaded notebook (at most 1 MiB of text, escaped twice in JSON): room for it.
MAX_RUN_START_ANSWER = 8 * 1024 * 1024
_WRAPPED_TOKEN = re.compile(r"[A-Za-z0-9._+/=-]{1,512}")


def run_start_answer(signed_spec: str, wrapped_token: str) -> dict:
    """What the hub answers the run's job, and only it (the holder of the run's report secret)."""
    return {"signed_spec": signed_spec, "wrapped_token": wrapped_token}


def parse_run_start_answer(body: bytes) -> tuple[str, str]:
    """(signed spec text, wrapped token) of the hub's answer; the spec's signature is the caller's to verify."""
    data = _json(body, MAX_RUN_START_ANSWER)
    if not isinstance(data, dict) or sorted(data) != ["signed_spec", "wrapped_token"]:
        raise ReportError('the answer must be exactly {"signed_spec": TEXT, "wrapped_token": TOKEN}')
    spec, token = data["signed_spec"], data["wrapped_token"]
    if not isinstance(spec, str) or not spec:
        raise ReportError("signed_spec must be the signed spec's JSON text")
    if not isinstance(token, str) or not _WRAPPED_TOKEN.fullmatch(token):
        raise ReportError("wrapped_token must be a wrapping token")
    return spec, token
