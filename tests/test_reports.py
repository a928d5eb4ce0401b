"""What a job may tell the hub (port, start stage, the server extension's audit events): exactly the allowed
shape, or a ReportError naming what was wrong. The endpoints themselves run in test_e2e_spawn.py."""

from __future__ import annotations

import json

import pytest

from jupyter_securehpc.audit import AuditLog
from jupyter_securehpc.spawner.reports import (
    MAX_AUDIT_BODY,
    MAX_AUDIT_EVENTS,
    ReportError,
    parse_audit_report,
    parse_port_report,
    parse_stage_report,
)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[8888]",
        b'{"port": "8888"}',
        b'{"port": 8888.0}',
        b'{"port": true}',
        b'{"port": 0}',
        b'{"port": 65536}',
        b'{"port": -1}',
        b'{"port": 8888, "ip": "evil.example.org"}',
        b'{"cmd": ["bash"]}',
        b'{"port": 8888, "port": 9999, "x": 1}',
        b'{"port": 8888}' + b" " * 100,
        b'{"\\u0070ort": 8888, "user_options": {}}',
    ],
)
def test_port_reports_other_than_one_integer_are_refused(body):
    with pytest.raises(ReportError):
        parse_port_report(body)


def test_a_port_report_is_accepted():
    assert parse_port_report(b'{"port": 45123}') == 45123


@pytest.mark.parametrize(
    "body",
    [
        b'{"stage": "ready"}',
        b'{"stage": "KEY"}',
        b'{"stage": ["key"]}',
        b'{"stage": "key", "port": 1}',
        b'{"stage": "key\\n"}',
        b'{"port": 8888}',
        b'{"stage": "' + b"k" * 100 + b'"}',
        b"[]",
    ],
)
def test_stage_reports_other_than_a_known_stage_are_refused(body):
    with pytest.raises(ReportError):
        parse_stage_report(body)


@pytest.mark.parametrize("stage", ["key", "mounting", "starting"])
def test_known_stages_are_accepted(stage):
    assert parse_stage_report(json.dumps({"stage": stage}).encode()) == stage


def session_event(tmp_path, **changes) -> dict:
    """An event exactly as the server extension writes it into the session's own audit log."""
    event = AuditLog(tmp_path / "session.jsonl").append(
        actor="bob", action="contents.download", obj="/files/scan.nii", outcome="denied", project="sleep",
        reason="downloads are not allowed", method="GET", role="data_scientist", status=403,
    )  # fmt: skip
    return {**event, **changes}


def audit_body(*events) -> bytes:
    return json.dumps({"events": list(events)}).encode()


def test_session_audit_events_are_taken_with_their_details(tmp_path):
    (event,) = parse_audit_report(audit_body(session_event(tmp_path)))
    assert (event.actor, event.action, event.obj, event.outcome) == (
        "bob", "contents.download", "/files/scan.nii", "denied"
    )  # fmt: skip
    assert event.details["method"] == "GET" and event.details["status"] == 403
    assert event.details["session_seq"] == 1


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"action": "Contents.Download"}, "action"),
        ({"action": "x" * 65}, "action"),
        ({"action": "a; rm -rf /"}, "action"),
        ({"outcome": "maybe"}, "outcome"),
        ({"actor": ""}, "actor"),
        ({"actor": "bob\nadmin"}, "actor"),
        ({"object": "/files/a\u2028b"}, "object"),
        ({"object": "o" * 1025}, "object"),
        ({"reason": 42}, "reason"),
        ({"details": {"method": "GET", "token": "s3cr3t"}}, "details"),
        ({"details": {"status": 99}}, "status"),
        ({"details": {"status": True}}, "status"),
        ({"details": {"method": "get /"}}, "method"),
        ({"details": {"role": "Data Owner"}}, "role"),
        ({"details": []}, "details"),
        ({"seq": -1}, "seq"),
        ({"password": "x"}, "unknown event fields"),
    ],
)
def test_session_audit_events_with_a_bad_field_are_refused(tmp_path, changes, says):
    with pytest.raises(ReportError, match=says):
        parse_audit_report(audit_body(session_event(tmp_path, **changes)))


def test_one_bad_event_refuses_the_whole_report(tmp_path):
    good = session_event(tmp_path)
    with pytest.raises(ReportError):
        parse_audit_report(audit_body(good, {**good, "outcome": "nope"}))


@pytest.mark.parametrize(
    "body",
    [
        b'{"events": []}',
        b'{"events": {}}',
        b'{"events": [], "port": 1}',
        b"[1]",
        b'{"events": ["text"]}',
        b"null",
    ],
)
def test_audit_reports_of_the_wrong_shape_are_refused(body):
    with pytest.raises(ReportError):
        parse_audit_report(body)


def test_audit_reports_are_bounded_in_events_and_bytes(tmp_path):
    event = session_event(tmp_path)
    with pytest.raises(ReportError, match="1 to"):
        parse_audit_report(audit_body(*[event] * (MAX_AUDIT_EVENTS + 1)))
    large = {**event, "reason": "r" * 1000}
    body = audit_body(*[large] * MAX_AUDIT_EVENTS)
    assert len(body) > MAX_AUDIT_BODY
    with pytest.raises(ReportError, match="longer than"):
        parse_audit_report(body)
