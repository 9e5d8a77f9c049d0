"""The exception register (regulation article 8): an enforcement action that was not recorded.

Where force majeure or the needs of evidence gathering made recording impossible or
unsuitable, the on-site lead or the head of the case-handling department may agree not to
record. The register keeps when and where the action was, who took part, why it was not
recorded, who agreed on the spot; then a leader approves (or refuses) it on the station,
saying in which capacity (on-site lead or department head), with a reason
(:func:`appliance.catalog.approvals.decide`: never the person who entered it).
"""

from __future__ import annotations

import sqlite3
from datetime import datetime

from appliance.catalog import approvals, audit
from appliance.catalog.approvals import ApprovalError, clean_text
from appliance.timeutil import iso, utcnow

REASON_KINDS = ("force_majeure", "evidence_needs", "device_fault", "other")
CAPACITIES = ("onsite_lead", "department_head")


def create(conn: sqlite3.Connection, *, occurred_at: datetime, place: str, officers: str, reason_kind: str,
           reason: str, actor: str, case_id: int | None = None, onsite_approver: str = "") -> int:
    """Enter an exception; it waits for a leader's decision."""
    if reason_kind not in REASON_KINDS:
        raise ApprovalError(f"{reason_kind!r}: unknown kind of reason")
    if occurred_at.tzinfo is None:
        raise ApprovalError("the time of the action needs its time zone")
    if occurred_at > utcnow():
        raise ApprovalError("the action cannot be in the future")
    if case_id is not None and not conn.execute("SELECT 1 FROM cases WHERE id = ?", (case_id,)).fetchone():
        raise ApprovalError(f"no case {case_id}")
    fields = (iso(occurred_at), clean_text(place, "place", limit=200), clean_text(officers, "officers", limit=200),
              case_id, reason_kind, clean_text(reason, "reason"),
              clean_text(onsite_approver, "agreed on site by", required=False, limit=64), actor, iso(utcnow()))
    eid = int(conn.execute(
        "INSERT INTO exceptions (occurred_at, place, officers, case_id, reason_kind, reason, onsite_approver,"
        " requested_by, requested_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", fields).lastrowid)
    audit.append(conn, actor, "exception.create", str(eid),
                 {"occurred_at": fields[0], "place": fields[1], "officers": fields[2], "case": case_id,
                  "reason_kind": reason_kind, "reason": fields[5], "onsite_approver": fields[6]})
    return eid


def decide(conn: sqlite3.Connection, exception_id: int, *, actor: str, approve: bool, reason: str,
           capacity: str) -> None:
    """A leader approves or refuses, as on-site lead or as department head (art. 8)."""
    if capacity not in CAPACITIES:
        raise ApprovalError(f"{capacity!r}: approve as on-site lead or as department head")
    approvals.decide(conn, "exceptions", exception_id, actor=actor, approve=approve, reason=reason,
                     extra={"capacity": capacity})
    conn.execute("UPDATE exceptions SET decided_as = ? WHERE id = ?", (capacity, exception_id))


def get(conn: sqlite3.Connection, exception_id: int) -> dict | None:
    r = conn.execute("SELECT e.*, c.number AS case_number FROM exceptions e LEFT JOIN cases c ON c.id = e.case_id"
                     " WHERE e.id = ?", (exception_id,)).fetchone()
    return dict(r) if r else None


def listing(conn: sqlite3.Connection, *, state: str | None = None, since: str | None = None,
            until: str | None = None, limit: int = 500) -> list[dict]:
    where, args = [], []
    if state:
        where.append("e.state = ?")
        args.append(state)
    if since:
        where.append("e.occurred_at >= ?")
        args.append(since)
    if until:
        where.append("e.occurred_at < ?")
        args.append(until)
    sql = ("SELECT e.*, c.number AS case_number FROM exceptions e LEFT JOIN cases c ON c.id = e.case_id"
           + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY e.occurred_at DESC LIMIT ?")
    return [dict(r) for r in conn.execute(sql, (*args, limit))]
