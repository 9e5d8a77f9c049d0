"""Judicial access (regulation article 17): a court, a procuratorate or another body asks to
view recordings; the bureau head approves; the custodian registers who viewed them, from
which unit, why and when. The access register (:func:`register`) is what the legal
section prints and exports.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime

from appliance.catalog import approvals, audit
from appliance.catalog.approvals import ApprovalError, choose_recordings, clean_text
from appliance.timeutil import iso, utcnow

AUTHORITY_KINDS = ("court", "procuratorate", "other")


def create(conn: sqlite3.Connection, recording_ids: list[int], *, authority_kind: str, authority: str,
           purpose: str, actor: str, cleared: frozenset[str], letter_ref: str = "",
           case_id: int | None = None) -> int:
    """Enter a request to view recordings (the custodian, from the body's letter)."""
    if authority_kind not in AUTHORITY_KINDS:
        raise ApprovalError(f"{authority_kind!r}: unknown kind of body (one of {', '.join(AUTHORITY_KINDS)})")
    ids = choose_recordings(conn, recording_ids, case_id, cleared)
    number = approvals.next_number(conn, "judicial_requests", "J")
    jid = int(conn.execute(
        "INSERT INTO judicial_requests (number, authority_kind, authority, letter_ref, purpose, case_id,"
        " requested_by, requested_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (number, authority_kind, clean_text(authority, "requesting body", limit=200),
         clean_text(letter_ref, "letter", required=False, limit=100), clean_text(purpose, "purpose"), case_id,
         actor, iso(utcnow()))).lastrowid)
    conn.executemany("INSERT INTO judicial_recordings (request_id, recording_id) VALUES (?, ?)",
                     [(jid, i) for i in ids])
    audit.append(conn, actor, "judicial.request", number,
                 {"authority": authority.strip(), "kind": authority_kind, "letter": letter_ref.strip(),
                  "recordings": ids[:200], "count": len(ids), "case": case_id})
    return jid


def decide(conn: sqlite3.Connection, request_id: int, *, actor: str, approve: bool, reason: str) -> None:
    approvals.decide(conn, "judicial_requests", request_id, actor=actor, approve=approve, reason=reason)


def register_access(conn: sqlite3.Connection, request_id: int, *, viewer: str, viewer_unit: str, reason: str,
                    started_at: datetime, actor: str, ended_at: datetime | None = None, viewer_id: str = "",
                    notes: str = "") -> int:
    """The custodian registers one viewing of an approved request (art. 17)."""
    request = get(conn, request_id)
    if request is None:
        raise ApprovalError(f"no judicial request {request_id}")
    if request["state"] != "approved":
        raise ApprovalError(f"{request['number']}: not approved by the bureau head ({request['state']})")
    if started_at.tzinfo is None or (ended_at is not None and ended_at.tzinfo is None):
        raise ApprovalError("times need their time zone")
    if ended_at is not None and ended_at < started_at:
        raise ApprovalError("the viewing cannot end before it began")
    if started_at > utcnow():
        raise ApprovalError("the viewing cannot begin in the future")
    fields = (request_id, clean_text(viewer, "viewer", limit=100), clean_text(viewer_unit, "unit", limit=200),
              clean_text(viewer_id, "identity document", required=False, limit=64), clean_text(reason, "reason"),
              iso(started_at), iso(ended_at) if ended_at else None, actor, iso(utcnow()),
              clean_text(notes, "notes", required=False))
    aid = int(conn.execute(
        "INSERT INTO judicial_accesses (request_id, viewer, viewer_unit, viewer_id, reason, started_at, ended_at,"
        " registered_by, registered_at, notes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", fields).lastrowid)
    audit.append(conn, actor, "judicial.access", request["number"],
                 {"viewer": fields[1], "unit": fields[2], "reason": fields[4], "started_at": fields[5],
                  "ended_at": fields[6]})
    return aid


def get(conn: sqlite3.Connection, request_id: int) -> dict | None:
    r = conn.execute("SELECT j.*, c.number AS case_number FROM judicial_requests j"
                     " LEFT JOIN cases c ON c.id = j.case_id WHERE j.id = ?", (request_id,)).fetchone()
    return dict(r) if r else None


def recordings(conn: sqlite3.Connection, request_id: int) -> list[dict]:
    return [dict(r) for r in conn.execute(
        "SELECT r.id, r.rel_path, r.size, r.sha256, r.camera_mtime, r.duration_s, r.device_serial, r.purged_at,"
        " o.name AS officer_name FROM judicial_recordings x JOIN recordings r ON r.id = x.recording_id"
        " LEFT JOIN officers o ON o.id = r.officer_id WHERE x.request_id = ? ORDER BY r.camera_mtime, r.id",
        (request_id,))]


def accesses(conn: sqlite3.Connection, request_id: int) -> list[dict]:
    return [dict(r) for r in conn.execute(
        "SELECT * FROM judicial_accesses WHERE request_id = ? ORDER BY started_at", (request_id,))]


def listing(conn: sqlite3.Connection, *, state: str | None = None, limit: int = 500) -> list[dict]:
    sql = ("SELECT j.*, c.number AS case_number,"
           " (SELECT COUNT(*) FROM judicial_recordings x WHERE x.request_id = j.id) AS recordings,"
           " (SELECT COUNT(*) FROM judicial_accesses a WHERE a.request_id = j.id) AS viewings"
           " FROM judicial_requests j LEFT JOIN cases c ON c.id = j.case_id")
    args: tuple = ()
    if state:
        sql += " WHERE j.state = ?"
        args = (state,)
    return [dict(r) for r in conn.execute(sql + " ORDER BY j.id DESC LIMIT ?", (*args, limit))]


REGISTER_COLUMNS = (
    ("started_at", "查阅时间", "Viewed from"), ("ended_at", "结束时间", "until"),
    ("viewer", "查阅人", "Viewer"), ("viewer_unit", "查阅单位", "Unit"), ("viewer_id", "证件号码", "ID document"),
    ("reason", "查阅事由", "Reason"), ("number", "申请编号", "Request"), ("authority", "来函单位", "Requesting body"),
    ("letter_ref", "来函文号", "Letter"), ("recordings", "录像数", "Recordings"),
    ("decided_by", "批准人", "Approved by"), ("decided_at", "批准时间", "Approved"),
    ("registered_by", "登记人", "Registered by"), ("notes", "备注", "Notes"),
)


def register(conn: sqlite3.Connection, *, since: str | None = None, until: str | None = None,
             limit: int = 5000) -> list[dict]:
    """The access register: every registered viewing, oldest first, with its request."""
    where, args = [], []
    if since:
        where.append("a.started_at >= ?")
        args.append(since)
    if until:
        where.append("a.started_at < ?")
        args.append(until)
    sql = ("SELECT a.*, j.number, j.authority, j.authority_kind, j.letter_ref, j.decided_by, j.decided_at,"
           " (SELECT COUNT(*) FROM judicial_recordings x WHERE x.request_id = j.id) AS recordings"
           " FROM judicial_accesses a JOIN judicial_requests j ON j.id = a.request_id"
           + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY a.started_at, a.id LIMIT ?")
    return [dict(r) for r in conn.execute(sql, (*args, limit))]
