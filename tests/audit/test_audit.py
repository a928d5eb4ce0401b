"""The audit log: what an admin or data owner checks is that any change to the file shows in `verify`."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
from datetime import datetime
from pathlib import Path

import pytest

from jupyter_securehpc.audit import (
    GENESIS,
    AuditError,
    AuditLog,
    AuditLogDamaged,
    VerifyResult,
    events_newest_first,
    head,
    tail,
    verify,
)

FIELDS = {"seq", "time", "actor", "on_behalf_of", "action", "object", "project", "outcome", "reason", "details"}
FIELDS |= {"prev", "hash"}


# --- helpers: a log, its lines, and the spec's hash computed independently of the module ---------------------


def canonical(obj: dict) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def spec_hash(event: dict) -> str:
    return hashlib.sha256(canonical({k: v for k, v in event.items() if k != "hash"})).hexdigest()


def make_log(path: Path, count: int) -> list[dict]:
    log = AuditLog(path)
    return [
        log.append(
            actor=f"user{i % 3}",
            action="server.spawn",
            obj=f"server/p{i % 2}",
            outcome="allowed" if i % 4 else "denied",
            project=f"p{i % 2}",
            gpus=i % 3,
        )
        for i in range(count)
    ]


def lines_of(path: Path) -> list[bytes]:
    """Lines without their newline; the fixtures below always end the file with one."""
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return data[:-1].split(b"\n")


def join(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


def changed(line: bytes, *, rehash: bool = False, **fields: object) -> bytes:
    event = json.loads(line)
    before = dict(event)
    event.update(fields)
    assert event != before, "the tampering must change something"
    if rehash:
        event["hash"] = spec_hash(event)
    return canonical(event)


def replaced(lines: list[bytes], number: int, new: bytes) -> bytes:
    return join([*lines[: number - 1], new, *lines[number:]])


def inserted(lines: list[bytes], after: int, new: bytes) -> bytes:
    return join([*lines[:after], new, *lines[after:]])


def deleted(lines: list[bytes], *numbers: int) -> bytes:
    return join([line for number, line in enumerate(lines, start=1) if number not in numbers])


def swapped(lines: list[bytes], a: int, b: int) -> bytes:
    lines = list(lines)
    lines[a - 1], lines[b - 1] = lines[b - 1], lines[a - 1]
    return join(lines)


def forged(seq: int, prev: str, *, valid_hash: bool = True) -> bytes:
    event = {
        "seq": seq,
        "time": "2026-01-01T00:00:00.000000Z",
        "actor": "mallory",
        "on_behalf_of": None,
        "action": "key.release",
        "object": "project/p0",
        "project": "p0",
        "outcome": "allowed",
        "reason": None,
        "details": {},
        "prev": prev,
    }
    event["hash"] = spec_hash(event) if valid_hash else "ab" * 32
    return canonical(event)


def hash_of(line: bytes) -> str:
    return json.loads(line)["hash"]


# --- tampering: each kind, on a 10-event log ----------------------------------------------------------------

# (tamper(lines) -> new file content, first bad line, a fragment of the problem an admin reads)
TAMPERING = [
    pytest.param(
        lambda ls: replaced(ls, 4, changed(ls[3], outcome="denied")),
        4,
        "line 4: hash does not match its content (edited?)",
        id="edit a field",
    ),
    pytest.param(lambda ls: replaced(ls, 2, changed(ls[1], details={"gpus": 8})), 2, "hash", id="edit details"),
    pytest.param(lambda ls: replaced(ls, 7, changed(ls[6], time="2020-01-01T00:00:00.000000Z")), 7, "hash", id="time"),
    pytest.param(
        lambda ls: replaced(ls, 5, changed(ls[4], actor="mallory", rehash=True)),
        6,
        "line 6: prev does not match line 5's hash",
        id="edit and rehash a middle line",
    ),
    pytest.param(lambda ls: replaced(ls, 3, changed(ls[2], prev="ab" * 32)), 3, "hash does not match", id="edit prev"),
    pytest.param(
        lambda ls: replaced(ls, 3, changed(ls[2], prev="ab" * 32, rehash=True)),
        3,
        "prev does not match line 2's hash",
        id="edit prev and rehash",
    ),
    pytest.param(
        lambda ls: replaced(ls, 6, changed(ls[5], seq=60, rehash=True)),
        6,
        "seq 60 follows 5",
        id="edit seq and rehash",
    ),
    pytest.param(
        lambda ls: replaced(ls, 8, changed(ls[7], rehash=True, reason=None, outcome="denied") + b" "),
        8,
        "canonical",
        id="edit, rehash, trailing space",
    ),
    pytest.param(lambda ls: deleted(ls, 1), 1, "line 1: seq 2 on the first line", id="delete first line"),
    pytest.param(
        lambda ls: deleted(ls, 5), 5, "line 5: seq 6 follows 4 (lines deleted or reordered?)", id="delete middle line"
    ),
    pytest.param(lambda ls: deleted(ls, 4, 5), 4, "seq 6 follows 3", id="delete two middle lines"),
    pytest.param(lambda ls: deleted(ls, 1, 2, 3), 1, "seq 4 on the first line", id="delete the first lines"),
    pytest.param(lambda ls: inserted(ls, 3, ls[2]), 4, "seq 3 follows 3", id="insert a copy of a line after it"),
    pytest.param(lambda ls: inserted(ls, 10, ls[1]), 11, "seq 2 follows 10", id="insert a copy at the end"),
    pytest.param(lambda ls: inserted(ls, 0, ls[4]), 1, "seq 5 on the first line", id="insert a copy at the top"),
    pytest.param(
        lambda ls: inserted(ls, 5, forged(6, hash_of(ls[4]))),
        7,
        "seq 6 follows 6",
        id="insert a forged line with a valid hash",
    ),
    pytest.param(
        lambda ls: inserted(ls, 5, forged(6, hash_of(ls[4]), valid_hash=False)),
        6,
        "hash does not match",
        id="insert a forged line with a made-up hash",
    ),
    pytest.param(
        lambda ls: replaced(ls, 5, forged(5, hash_of(ls[3]))),
        6,
        "prev does not match line 5's hash",
        id="replace a line with a forged one",
    ),
    pytest.param(lambda ls: swapped(ls, 4, 5), 4, "seq 5 follows 3", id="swap two adjacent lines"),
    pytest.param(lambda ls: swapped(ls, 2, 9), 2, "seq 9 follows 1", id="swap two distant lines"),
    pytest.param(lambda ls: join([ls[-1], *ls[:-1]]), 1, "seq 10 on the first line", id="move the last line to top"),
    pytest.param(lambda ls: join([*ls[:2], *ls[3:6], ls[2], *ls[6:]]), 3, "seq 4 follows 2", id="reorder lines 3-6"),
    pytest.param(lambda ls: join(ls[::-1]), 1, "seq 10 on the first line", id="reverse the log"),
    pytest.param(lambda ls: join(ls)[:-25], 10, "truncated", id="truncate the last line"),
    pytest.param(lambda ls: join(ls)[:-1], 10, "no newline", id="drop the final newline"),
    pytest.param(lambda ls: join(ls[:5]) + ls[5][:40], 6, "line 6", id="truncate in the middle of the log"),
    pytest.param(lambda ls: inserted(ls, 5, b""), 6, "line 6: blank line", id="blank line in the middle"),
    pytest.param(lambda ls: inserted(ls, 10, b""), 11, "blank line", id="blank line at the end"),
    pytest.param(lambda ls: inserted(ls, 2, b"   \t"), 3, "blank line", id="whitespace line"),
    pytest.param(lambda ls: inserted(ls, 2, b"rm -rf / # oops"), 3, "not valid JSON", id="insert non-JSON garbage"),
    pytest.param(lambda ls: replaced(ls, 7, b"\x00\x01garbage"), 7, "not valid JSON", id="replace a line by garbage"),
    pytest.param(lambda ls: replaced(ls, 3, ls[2].replace(b"user", b"us\xff")), 3, "JSON", id="invalid UTF-8"),
    pytest.param(lambda ls: inserted(ls, 4, b"[1, 2, 3]"), 5, "not a JSON object", id="a JSON array"),
    pytest.param(
        lambda ls: replaced(ls, 4, b'{"actor":"mallory",' + ls[3][1:]),
        4,
        "canonical",
        id="duplicate key shadowing a field",
    ),
    pytest.param(
        lambda ls: replaced(ls, 2, json.dumps(json.loads(ls[1]), sort_keys=True).encode()),
        2,
        "canonical",
        id="same event spelled with spaces",
    ),
    pytest.param(lambda ls: replaced(ls, 5, ls[4] + b"\r"), 5, "canonical", id="CRLF line ending"),
    pytest.param(
        lambda ls: replaced(ls, 8, canonical({k: v for k, v in json.loads(ls[7]).items() if k != "reason"})),
        8,
        "missing field(s) reason",
        id="remove a field",
    ),
    pytest.param(
        lambda ls: replaced(ls, 9, changed(ls[8], outcome="maybe", rehash=True)),
        9,
        "outcome 'maybe'",
        id="unknown outcome, rehashed",
    ),
    pytest.param(lambda ls: replaced(ls, 9, changed(ls[8], seq=True, rehash=True)), 9, "seq", id="seq is a boolean"),
    pytest.param(
        lambda ls: replaced(ls, 6, ls[5].replace(b'"gpus":', b'"gpus":NaN,"x":')),
        6,
        "not valid JSON",
        id="NaN",
    ),
]


@pytest.mark.parametrize(("tamper", "first_bad_line", "problem"), TAMPERING)
def test_verify_names_the_first_tampered_line(tmp_path, tamper, first_bad_line, problem):
    path = tmp_path / "audit.log"
    make_log(path, 10)
    assert verify(path).ok
    path.write_bytes(tamper(lines_of(path)))

    result = verify(path)

    assert result.ok is False
    assert result.first_bad_line == first_bad_line
    assert result.lines == first_bad_line - 1
    assert result.problem.startswith(f"line {first_bad_line}: ")
    assert problem in result.problem


def test_clean_log_verifies_and_follows_the_format(tmp_path):
    path = tmp_path / "audit.log"
    events = make_log(path, 50)

    assert verify(path) == VerifyResult(ok=True, lines=50, first_bad_line=None, problem=None)
    prev = "0" * 64
    for number, (raw, event) in enumerate(zip(lines_of(path), events, strict=True), start=1):
        parsed = json.loads(raw)
        assert parsed == event
        assert FIELDS <= parsed.keys()
        assert parsed["seq"] == number
        assert parsed["prev"] == prev
        assert parsed["hash"] == spec_hash(parsed)
        assert raw == canonical(parsed)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", parsed["time"])
        datetime.strptime(parsed["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
        prev = parsed["hash"]


def test_append_writes_every_field_and_returns_what_it_wrote(tmp_path):
    path = tmp_path / "audit.log"
    log = AuditLog(path)
    event = log.append(
        actor="root-admin",
        action="key.release",
        obj="project/cardio",
        outcome="allowed",
        on_behalf_of="alice",
        project="cardio",
        reason="session start",
        job_id=4711,
        mounts=["workspace", ("dataset", "ecg")],
        policy={"key_ttl": 300, "gpus": 2.5, "exclusive": True, "note": None},
    )

    assert json.loads(lines_of(path)[-1]) == event
    assert {k: event[k] for k in ("seq", "actor", "on_behalf_of", "action", "object", "project", "outcome")} == {
        "seq": 1,
        "actor": "root-admin",
        "on_behalf_of": "alice",
        "action": "key.release",
        "object": "project/cardio",
        "project": "cardio",
        "outcome": "allowed",
    }
    assert event["reason"] == "session start"
    assert event["prev"] == GENESIS
    assert event["details"] == {
        "job_id": 4711,
        "mounts": ["workspace", ["dataset", "ecg"]],
        "policy": {"key_ttl": 300, "gpus": 2.5, "exclusive": True, "note": None},
    }
    second = log.append(actor="bob", action="login", obj="user/bob", outcome="ok")
    assert (second["seq"], second["prev"], second["on_behalf_of"], second["details"]) == (2, event["hash"], None, {})


def test_text_outside_ascii_and_line_separators_round_trip(tmp_path):
    path = tmp_path / "audit.log"
    log = AuditLog(path)
    reason = "Zoë asked\nfor it\u2028with a line separator\r and a NUL \x00"
    log.append(actor="zoë", action="share", obj="dataset/ünï", outcome="ok", reason=reason, note="日本")

    assert "zoë".encode() in path.read_bytes()
    assert verify(path).ok
    assert tail(path, 1)[0]["reason"] == reason


@pytest.mark.parametrize("outcome", ["maybe", "Allowed", "", None, "ok "])
def test_unknown_outcome_is_refused_and_nothing_is_written(tmp_path, outcome):
    path = tmp_path / "audit.log"
    with pytest.raises(ValueError, match=re.escape(repr(outcome))):
        AuditLog(path).append(actor="a", action="login", obj="user/a", outcome=outcome)
    assert not path.exists()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"actor": ""},
        {"actor": None},
        {"obj": 3},
        {"action": ""},
        {"project": 5},
        {"reason": b"bytes"},
        {"actor": "\ud800"},
    ],
)
def test_bad_arguments_are_refused(tmp_path, kwargs):
    path = tmp_path / "audit.log"
    with pytest.raises(ValueError):
        AuditLog(path).append(**{"actor": "a", "action": "login", "obj": "user/a", "outcome": "ok", **kwargs})
    assert not path.exists()


@pytest.mark.parametrize(
    "details",
    [
        {"when": datetime(2026, 1, 1)},
        {"files": {"a", "b"}},
        {"ratio": float("nan")},
        {"ratio": float("inf")},
        {"nested": {1: "int key"}},
        {"path": Path("/etc/passwd")},
        {"blob": "x" * (1 << 20)},
    ],
    ids=["datetime", "set", "nan", "inf", "int key", "Path", "too large"],
)
def test_details_that_do_not_read_back_the_same_are_refused(tmp_path, details):
    path = tmp_path / "audit.log"
    with pytest.raises(ValueError):
        AuditLog(path).append(actor="a", action="x", obj="y", outcome="ok", **details)
    assert not path.exists()


# --- secrets ------------------------------------------------------------------------------------------------

SECRET_DETAILS = [
    {"token": "s.abc"},
    {"Token": "s.abc"},
    {"TOKEN": "s.abc"},
    {"tokens": ["s.abc"]},
    {"key": "k"},
    {"keys": ["k"]},
    {"api_key": "k"},
    {"apiKey": "k"},
    {"APIKey": "k"},
    {"apikey": "k"},
    {"private-key": "k"},
    {"privatekey": "k"},
    {"sshKeys": ["k"]},
    {"project_key": "k"},
    {"password": "p"},
    {"db_password": "p"},
    {"dbPassword": "p"},
    {"passwd": "p"},
    {"secret": "s"},
    {"client_secret": "s"},
    {"secrets": {"a": 1}},
    {"wrapping": "w"},
    {"wrapping_token": "w"},
    {"accessToken": "t"},
    {"access-token": "t"},
    {"authtoken": "t"},
    {"vault.token": "t"},
    {"X-Vault-Token": "t"},
    {"Authorization": "Bearer t"},
    {"vault": {"token": "t"}},
    {"mounts": [{"name": "ecg", "key": "k"}]},
]


@pytest.mark.parametrize("details", SECRET_DETAILS, ids=lambda d: json.dumps(d))
def test_secret_looking_detail_keys_are_refused_and_nothing_is_written(tmp_path, details):
    path = tmp_path / "audit.log"
    make_log(path, 2)
    before = path.read_bytes()

    with pytest.raises(AuditError, match="secret"):
        AuditLog(path).append(actor="hub", action="key.release", obj="project/p", outcome="allowed", **details)

    assert path.read_bytes() == before


def test_a_refused_first_event_does_not_even_create_the_log(tmp_path):
    path = tmp_path / "audit" / "audit.log"
    with pytest.raises(AuditError):
        AuditLog(path).append(actor="hub", action="spawn", obj="server/p", outcome="ok", wrapping_token="s.x")
    assert not path.parent.exists()


@pytest.mark.parametrize(
    "details",
    [{"key_ttl": 300}, {"key_version": 3}, {"KEY_TTL": 300}, {"keyboard": "de"}, {"tokenizer": "bpe"}, {"gpus": 2}],
    ids=lambda d: next(iter(d)),
)
def test_policy_fields_and_innocent_words_are_allowed(tmp_path, details):
    path = tmp_path / "audit.log"
    event = AuditLog(path).append(actor="admin", action="policy.set", obj="project/p", outcome="ok", **details)
    assert event["details"] == details


# --- a damaged end refuses appends --------------------------------------------------------------------------

DAMAGE = [
    pytest.param(lambda ls: join(ls)[:-30], 5, id="truncated last line"),
    pytest.param(lambda ls: join(ls)[:-1], 5, id="no final newline"),
    pytest.param(lambda ls: join(ls) + b"garbage\n", 6, id="garbage at the end"),
    pytest.param(lambda ls: join(ls) + b"\n", 6, id="blank line at the end"),
    pytest.param(lambda ls: replaced(ls, 5, changed(ls[4], outcome="allowed")), 5, id="edited last line"),
    pytest.param(lambda ls: deleted(ls, 4), 4, id="second to last line deleted"),
    pytest.param(lambda ls: replaced(ls, 4, b"{}"), 4, id="second to last line garbage"),
    pytest.param(lambda ls: join([ls[1]]), 1, id="only a later line left"),
    pytest.param(lambda ls: join(ls) + b"x" * (3 << 20), 6, id="huge garbage at the end"),
]


@pytest.mark.parametrize(("tamper", "bad_line"), DAMAGE)
def test_a_damaged_log_refuses_further_appends(tmp_path, tamper, bad_line):
    path = tmp_path / "audit.log"
    make_log(path, 5)
    path.write_bytes(tamper(lines_of(path)))
    before = path.read_bytes()

    with pytest.raises(AuditLogDamaged) as caught:
        AuditLog(path).append(actor="hub", action="login", obj="user/a", outcome="ok")

    assert caught.value.line == bad_line
    assert f"damaged at line {bad_line}" in str(caught.value)
    assert "securehpc audit verify" in str(caught.value)
    assert path.read_bytes() == before
    with pytest.raises(AuditLogDamaged):
        head(path)
    with pytest.raises(AuditLogDamaged):
        tail(path, 3)


def test_a_failed_write_leaves_the_chain_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "audit.log"
    make_log(path, 3)
    real_write = os.write

    def half_write(fd, data):
        return real_write(fd, data[: len(data) // 2])

    monkeypatch.setattr(os, "write", half_write)
    with pytest.raises(AuditError, match="not recorded"):
        AuditLog(path).append(actor="hub", action="login", obj="user/a", outcome="ok")
    monkeypatch.undo()

    assert verify(path) == VerifyResult(True, 3, None, None)
    assert AuditLog(path).append(actor="hub", action="login", obj="user/a", outcome="ok")["seq"] == 4


def test_a_failed_fsync_is_reported_not_hidden(tmp_path, monkeypatch):
    path = tmp_path / "audit.log"
    make_log(path, 3)

    def disk_error(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", disk_error)
    with pytest.raises(AuditError, match="Input/output error"):
        AuditLog(path).append(actor="hub", action="login", obj="user/a", outcome="ok")
    monkeypatch.undo()
    assert verify(path).lines == 3


# --- anchors: what the file alone cannot show ---------------------------------------------------------------


def test_deleting_the_last_line_shows_only_against_an_anchor(tmp_path):
    path = tmp_path / "audit.log"
    make_log(path, 10)
    anchor = head(path)
    assert anchor == (10, hash_of(lines_of(path)[-1]))
    path.write_bytes(deleted(lines_of(path), 10))

    assert verify(path).ok  # the documented limit
    result = verify(path, anchor=anchor)
    assert (result.ok, result.lines, result.first_bad_line) == (False, 9, 10)
    assert "anchor records seq 10" in result.problem


def test_deleting_the_last_lines_shows_against_an_anchor(tmp_path):
    path = tmp_path / "audit.log"
    make_log(path, 10)
    anchor = AuditLog(path).head()
    path.write_bytes(deleted(lines_of(path), 8, 9, 10))

    result = verify(path, anchor=anchor)
    assert (result.ok, result.lines, result.first_bad_line) == (False, 7, 8)


def test_editing_and_rehashing_the_last_line_shows_only_against_an_anchor(tmp_path):
    path = tmp_path / "audit.log"
    make_log(path, 10)
    anchor = head(path)
    lines = lines_of(path)
    path.write_bytes(replaced(lines, 10, changed(lines[9], outcome="allowed", actor="mallory", rehash=True)))

    assert verify(path).ok
    result = AuditLog(path).verify(anchor=anchor)
    assert (result.ok, result.first_bad_line) == (False, 10)
    assert result.problem.startswith("line 10: hash differs from the anchor")


def test_rewriting_the_chain_from_a_line_on_shows_at_the_anchor(tmp_path):
    path = tmp_path / "audit.log"
    make_log(path, 10)
    anchor = (5, hash_of(lines_of(path)[4]))
    lines = lines_of(path)
    prev = hash_of(lines[1])
    for index in range(2, 10):  # lines 3..10 rewritten into a consistent chain
        event = json.loads(lines[index])
        event.update(actor="mallory", prev=prev)
        event["hash"] = prev = spec_hash(event)
        lines[index] = canonical(event)
    path.write_bytes(join(lines))

    assert verify(path).ok
    assert verify(path, anchor=anchor).first_bad_line == 5


def test_an_old_anchor_still_verifies_after_more_events(tmp_path):
    path = tmp_path / "audit.log"
    make_log(path, 5)
    anchor = head(path)
    make_log(path, 5)
    assert verify(path, anchor=anchor).ok
    assert verify(path, anchor=(anchor[0], anchor[1].upper())).ok
    assert verify(path, anchor=(0, GENESIS)).ok


@pytest.mark.parametrize(
    "anchor",
    [(1, "nothex"), ("1", "0" * 64), (-1, "0" * 64), (True, "0" * 64), (0, "ab" * 32), (3,), "3:abc", 42],
)
def test_an_anchor_that_cannot_come_from_head_is_refused(tmp_path, anchor):
    path = tmp_path / "audit.log"
    make_log(path, 2)
    with pytest.raises(ValueError, match="anchor"):
        verify(path, anchor=anchor)


# --- empty, missing, odd files ------------------------------------------------------------------------------


def test_missing_log_does_not_verify_and_says_where_it_looked(tmp_path):
    path = tmp_path / "nowhere" / "audit.log"
    result = verify(path)
    assert (result.ok, result.lines, result.first_bad_line) == (False, 0, None)
    assert str(path) in result.problem and "does not exist" in result.problem
    with pytest.raises(AuditError, match="no audit log"):
        head(path)
    with pytest.raises(AuditError, match="no audit log"):
        tail(path, 5)


def test_empty_log_verifies_with_zero_lines(tmp_path):
    path = tmp_path / "audit.log"
    path.touch()
    assert verify(path) == VerifyResult(ok=True, lines=0, first_bad_line=None, problem=None)
    assert head(path) == (0, GENESIS)
    assert tail(path, 3) == []
    assert AuditLog(path).append(actor="a", action="login", obj="user/a", outcome="ok")["seq"] == 1


def test_a_directory_or_fifo_is_not_a_log(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (tmp_path, fifo):
        result = verify(path)
        assert (result.ok, result.first_bad_line) == (False, None)
        assert "not a regular file" in result.problem
    with pytest.raises(AuditError, match="not a regular file"):
        AuditLog(fifo).append(actor="a", action="login", obj="user/a", outcome="ok")


def test_new_log_and_folder_are_private_whatever_the_umask(tmp_path):
    path = tmp_path / "var" / "audit" / "audit.log"
    old = os.umask(0)
    try:
        AuditLog(path).append(actor="a", action="login", obj="user/a", outcome="ok")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700


# --- tail and head ------------------------------------------------------------------------------------------


def test_tail_gives_the_last_events_oldest_first(tmp_path):
    path = tmp_path / "audit.log"
    events = make_log(path, 12)
    assert tail(path, 3) == events[-3:]
    assert AuditLog(path).tail(1) == events[-1:]
    assert tail(path, 12) == events
    assert tail(path, 100) == events
    assert tail(path, 0) == []
    assert head(path) == (12, events[-1]["hash"])
    with pytest.raises(ValueError):
        tail(path, -1)


def test_append_head_and_tail_read_only_the_end_of_a_large_log(tmp_path, monkeypatch):
    path = tmp_path / "audit.log"
    log = AuditLog(path)
    for i in range(150):
        log.append(actor="a", action="x", obj="y", outcome="ok", padding="p" * 10_000, i=i)
    assert path.stat().st_size > 1_500_000
    read = []
    real_pread = os.pread

    def counting_pread(fd, length, offset):
        data = real_pread(fd, length, offset)
        read.append(len(data))
        return data

    monkeypatch.setattr(os, "pread", counting_pread)
    log.append(actor="a", action="x", obj="y", outcome="ok")
    head(path)
    tail(path, 2)
    assert sum(read) < 200_000


# --- reading newest first (the portal's audit viewer) -------------------------------------------------------


def test_newest_first_gives_every_event_in_reverse_whatever_the_chunk(tmp_path):
    from jupyter_securehpc.audit.log import _lines_backwards

    path = tmp_path / "audit.log"
    log = AuditLog(path)
    events = [log.append(actor="a", action="x", obj="o" * (1 + i * 37 % 900), outcome="ok", i=i) for i in range(80)]
    assert list(events_newest_first(path)) == list(log.events_newest_first()) == events[::-1]
    size = path.stat().st_size
    for chunk in (1, 2, 5, 64, 1000, size, 10 * size):
        with open(path, "rb") as handle:
            lines = list(_lines_backwards(handle.fileno(), size, chunk))
        assert [json.loads(raw) for _offset, raw in lines] == events[::-1], chunk
        assert [offset for offset, _raw in lines] == sorted((o for o, _ in lines), reverse=True)
    assert list(events_newest_first(tmp_path / "missing.log")) == []
    (tmp_path / "empty.log").write_bytes(b"")
    assert list(events_newest_first(tmp_path / "empty.log")) == []


def test_newest_first_stops_at_a_damaged_line_naming_it(tmp_path):
    path = tmp_path / "audit.log"
    events = make_log(path, 10)
    lines = path.read_bytes().split(b"\n")
    lines[3] = b"not an event"
    path.write_bytes(b"\n".join(lines))
    reader = events_newest_first(path)
    assert [next(reader) for _ in range(6)] == events[4:][::-1]
    with pytest.raises(AuditLogDamaged, match="line 4: not valid JSON"):
        next(reader)
    (tmp_path / "cut.log").write_bytes(path.read_bytes().rsplit(b"\n", 2)[0][:-5])
    with pytest.raises(AuditLogDamaged, match="no newline"):
        next(events_newest_first(tmp_path / "cut.log"))


def test_newest_first_reads_only_the_end_for_a_page(tmp_path, monkeypatch):
    path = tmp_path / "audit.log"
    log = AuditLog(path)
    for i in range(150):
        log.append(actor="a", action="x", obj="y", outcome="ok", padding="p" * 10_000, i=i)
    read = []
    real_pread = os.pread

    def counting_pread(fd, length, offset):
        data = real_pread(fd, length, offset)
        read.append(len(data))
        return data

    monkeypatch.setattr(os, "pread", counting_pread)
    reader = log.events_newest_first()
    page = [next(reader) for _ in range(5)]
    reader.close()
    assert [event["details"]["i"] for event in page] == [149, 148, 147, 146, 145]
    assert sum(read) < 200_000


# --- several writers ----------------------------------------------------------------------------------------


def append_many(path: str, actor: str, count: int, start) -> None:
    log = AuditLog(Path(path))
    start.wait()
    for index in range(count):
        log.append(actor=actor, action="test.append", obj=f"object/{index}", outcome="ok", index=index)


def test_concurrent_appends_from_several_processes_keep_one_chain(tmp_path):
    path = tmp_path / "audit" / "audit.log"  # nobody has created it yet: the creation races too
    context = multiprocessing.get_context("fork")
    start = context.Barrier(4)
    workers = [context.Process(target=append_many, args=(str(path), f"proc{n}", 50, start)) for n in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=240)
    assert [worker.exitcode for worker in workers] == [0, 0, 0, 0]

    assert verify(path) == VerifyResult(ok=True, lines=200, first_bad_line=None, problem=None)
    events = tail(path, 200)
    assert [event["seq"] for event in events] == list(range(1, 201))
    for n in range(4):
        assert [e["details"]["index"] for e in events if e["actor"] == f"proc{n}"] == list(range(50))
