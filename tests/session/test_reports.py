"""What a job may tell the hub (port, start stage, the server extension's audit events, activity): exactly the
allowed shape, or a ReportError naming what was wrong; the report credential; events bound to the session; how
refusals are counted. The endpoints themselves run against a real hub in test_hub_reports.py."""

from __future__ import annotations

import json

import pytest

from jupyter_securehpc.audit import AuditLog
from jupyter_securehpc.spawner.reports import (
    AUDIT,
    MAX_AUDIT_BODY,
    MAX_AUDIT_EVENTS,
    QUIET,
    SUMMARY,
    SUMMARY_ALL,
    ForgedEvent,
    RefusalLimiter,
    ReportError,
    bind_events,
    new_report_secret,
    parse_activity_report,
    parse_audit_report,
    parse_port_report,
    parse_stage_report,
    report_secret_hash,
    secret_from_authorization,
    secret_matches,
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


@pytest.mark.parametrize(
    "body",
    [
        b'{"last_activity": "2099-01-01T00:00:00.123456Z"}',
        b'{"servers": {"sleep": {"last_activity": "2030-01-01T00:00:00Z"}}}',
        b'{"time": 1}',
        b"[]",
        b"null",
        b"",
        b"0",
        b'""',
        b"{}" + b" " * 20,
    ],
)
def test_activity_reports_carry_no_time(body):
    with pytest.raises(ReportError):
        parse_activity_report(body)


def test_an_empty_activity_report_is_accepted():
    assert parse_activity_report(b"{}") is None


SECRET, SECRET_HASH = new_report_secret()


@pytest.mark.parametrize(
    ("header", "secret"),
    [
        (f"securehpc-report {SECRET}", SECRET),
        (f"SecureHPC-Report {SECRET}", SECRET),  # schemes are case-insensitive (RFC 9110)
        (None, None),
        ("", None),
        (f"token {SECRET}", None),  # a hub token's scheme is never a report credential
        (f"bearer {SECRET}", None),
        (f"securehpc-report  {SECRET}", None),
        (f"securehpc-report {SECRET} extra", None),
        ("securehpc-report ", None),
        ("securehpc-report short", None),
        (f"securehpc-report {SECRET}\n", None),
        ("securehpc-report " + "a" * 129, None),
        (f"securehpc-report {SECRET[:-1]}=", None),
    ],
)
def test_only_the_report_scheme_carries_a_report_secret(header, secret):
    assert secret_from_authorization(header) == secret


def test_a_secret_matches_its_own_hash_only():
    other, _ = new_report_secret()
    assert SECRET_HASH == report_secret_hash(SECRET) and len(SECRET_HASH) == 64 and SECRET not in SECRET_HASH
    assert secret_matches(SECRET, SECRET_HASH)
    assert not secret_matches(other, SECRET_HASH)  # another server's secret
    assert not secret_matches(SECRET, None)  # a stopped server keeps none
    assert not secret_matches(SECRET, "")
    assert not secret_matches(SECRET_HASH, SECRET_HASH)  # the hash itself is no credential


def event_of(tmp_path, **changes):
    (event,) = parse_audit_report(audit_body(session_event(tmp_path, **changes)))
    return event


def test_events_of_the_sessions_user_or_anonymous_are_bound(tmp_path):
    events = [event_of(tmp_path), event_of(tmp_path, actor="anonymous"), event_of(tmp_path, project=None)]
    assert bind_events(events, "bob", "sleep") == events


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"actor": "alice"}, "actor 'alice'"),
        ({"actor": "admin"}, "actor 'admin'"),
        ({"actor": "Bob"}, "actor 'Bob'"),
        ({"actor": "x" * 500}, "actor 'xxxxxxxx"),
        ({"project": "mri"}, "project 'mri'"),
    ],
)
def test_events_naming_another_actor_or_project_are_forged(tmp_path, changes, says):
    with pytest.raises(ForgedEvent, match=says) as error:
        bind_events([event_of(tmp_path), event_of(tmp_path, **changes)], "bob", "sleep")
    assert len(str(error.value)) < 300  # a forged name is shortened, not echoed whole


def test_events_acting_on_behalf_of_someone_are_refused(tmp_path):
    with pytest.raises(ReportError, match="on_behalf_of"):
        parse_audit_report(audit_body(session_event(tmp_path, on_behalf_of="alice")))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_refusals_of_one_source_audited_then_summarised_then_rejected():
    clock = Clock()
    limiter = RefusalLimiter(audited_per_source=3, reject_after=6, audited_all_sources=100, clock=clock)
    seen = []
    while not limiter.blocked("10.0.0.1"):
        seen.append(limiter.refusal("10.0.0.1"))
    assert seen == [AUDIT, AUDIT, AUDIT, SUMMARY, QUIET, QUIET]
    assert not limiter.blocked("10.0.0.2") and limiter.refusal("10.0.0.2") == AUDIT  # other sources are not hit
    clock.now += 59
    assert limiter.blocked("10.0.0.1")
    clock.now += 1  # a new minute
    assert not limiter.blocked("10.0.0.1") and limiter.refusal("10.0.0.1") == AUDIT


def test_sources_that_vary_their_address_share_a_bound():
    limiter = RefusalLimiter(audited_per_source=2, reject_after=4, audited_all_sources=5, max_sources=3,
                             clock=Clock())  # fmt: skip
    seen = [limiter.refusal(f"10.0.0.{i}") for i in range(20)]
    assert seen[:5] == [AUDIT] * 5 and seen[5] == SUMMARY_ALL and set(seen[6:]) == {QUIET}
    # Beyond max_sources, new addresses are counted together: the table stays small, and they get rejected.
    assert limiter.blocked("10.9.9.9") and len(limiter._counts) == 4
