"""Confidentiality (regulation article 3): records touching state secrets, trade secrets or
personal privacy are handled under confidentiality rules and permissions.

A recording carries the marks put on it and the marks of every case it is on. An account
is cleared for the marks its role is cleared for (:data:`ROLE_CLEARANCE`) plus those
granted to it by name (by the bureau head, audited). A recording is *visible* to an
account only when the account is cleared for every mark the recording carries. This
module is the one place that decides it:

* :func:`visible_sql` is the condition the search (and everything built on it) adds;
* :func:`withheld` is what the recording page, playing and downloading check, and what
  burning, releases and judicial requests check for every recording they touch.

Refused attempts are audited by the caller in the same transaction
(``recording.refused-confidential``, ``case.refused-confidential``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from appliance.catalog import audit
from appliance.errors import ApplianceError
from appliance.timeutil import iso, utcnow

MARKS = ("state_secret", "trade_secret", "privacy")
#: Who is cleared by role. Officers, the legal section and IT are cleared for nothing by
#: role; the administrator neither (a technical account). Anyone may be cleared by name.
ROLE_CLEARANCE: dict[str, frozenset[str]] = {
    "bureau_head": frozenset(MARKS),
    "leader": frozenset({"trade_secret", "privacy"}),
    "device_manager": frozenset({"privacy"}),
}


class MarkError(ApplianceError):
    """保密标记错误 / confidentiality mark error: {}"""


def check_mark(mark: str) -> str:
    if mark not in MARKS:
        raise MarkError(f"{mark!r}: unknown mark (one of {', '.join(MARKS)})")
    return mark


def clearance(conn: sqlite3.Connection, user_id: int, role: str) -> frozenset[str]:
    """The marks an account is cleared for: its role's and its own."""
    own = {r[0] for r in conn.execute("SELECT mark FROM user_clearances WHERE user_id = ?", (user_id,))}
    return ROLE_CLEARANCE.get(role, frozenset()) | own


def _not_in(cleared: frozenset[str]) -> tuple[str, list[str]]:
    marks = sorted(set(MARKS) - set(cleared))
    return ",".join("?" * len(marks)), marks


def visible_sql(cleared: frozenset[str], alias: str = "r") -> tuple[str, list[str]]:
    """A WHERE condition (and its arguments) true for the recordings ``cleared`` may see."""
    marks_sql, marks = _not_in(cleared)
    if not marks:
        return "1", []
    return (f"NOT EXISTS (SELECT 1 FROM recording_marks m WHERE m.recording_id = {alias}.id"
            f" AND m.mark IN ({marks_sql}))"
            f" AND NOT EXISTS (SELECT 1 FROM recording_cases mc JOIN case_marks cm ON cm.case_id = mc.case_id"
            f" WHERE mc.recording_id = {alias}.id AND cm.mark IN ({marks_sql}))", marks + marks)


def case_visible_sql(cleared: frozenset[str], alias: str = "c") -> tuple[str, list[str]]:
    marks_sql, marks = _not_in(cleared)
    if not marks:
        return "1", []
    return (f"NOT EXISTS (SELECT 1 FROM case_marks cm WHERE cm.case_id = {alias}.id"
            f" AND cm.mark IN ({marks_sql}))", marks)


def marks_of(conn: sqlite3.Connection, recording_ids: Iterable[int]) -> dict[int, set[str]]:
    """Every mark each recording carries, its own and its cases'."""
    ids = sorted({int(i) for i in recording_ids})
    out: dict[int, set[str]] = {i: set() for i in ids}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        q = ",".join("?" * len(chunk))
        for rid, mark in conn.execute(
                f"SELECT recording_id, mark FROM recording_marks WHERE recording_id IN ({q})"
                f" UNION SELECT x.recording_id, cm.mark FROM recording_cases x JOIN case_marks cm"
                f" ON cm.case_id = x.case_id WHERE x.recording_id IN ({q})", chunk + chunk):
            out[rid].add(mark)
    return out


def own_marks(conn: sqlite3.Connection, recording_id: int) -> list[dict]:
    return [dict(r) for r in conn.execute("SELECT * FROM recording_marks WHERE recording_id = ? ORDER BY mark",
                                          (recording_id,))]


def case_marks(conn: sqlite3.Connection, case_ids: Iterable[int]) -> dict[int, set[str]]:
    ids = sorted({int(i) for i in case_ids})
    out: dict[int, set[str]] = {i: set() for i in ids}
    if ids:
        q = ",".join("?" * len(ids))
        for cid, mark in conn.execute(f"SELECT case_id, mark FROM case_marks WHERE case_id IN ({q})", ids):
            out[cid].add(mark)
    return out


def withheld(conn: sqlite3.Connection, recording_ids: Iterable[int], cleared: frozenset[str]) -> dict[int, set[str]]:
    """The recordings among ``recording_ids`` that ``cleared`` may not see, with the marks that
    keep them away."""
    return {rid: marks - cleared for rid, marks in marks_of(conn, recording_ids).items() if marks - cleared}


def case_withheld(conn: sqlite3.Connection, case_id: int, cleared: frozenset[str]) -> set[str]:
    return case_marks(conn, [case_id])[case_id] - cleared


def mark_recordings(conn: sqlite3.Connection, recording_ids: Iterable[int], mark: str, *, actor: str,
                    cleared: frozenset[str], reason: str = "") -> int:
    """Put ``mark`` on recordings the actor may see; returns how many were newly marked."""
    check_mark(mark)
    ids = sorted({int(i) for i in recording_ids})
    if not ids:
        raise MarkError("no recordings chosen")
    hidden = withheld(conn, ids, cleared)
    if hidden:
        raise MarkError(f"recording {min(hidden)}: not visible to you")
    now = iso(utcnow())
    added = sum(conn.execute("INSERT OR IGNORE INTO recording_marks (recording_id, mark, marked_at, marked_by,"
                             " reason) VALUES (?, ?, ?, ?, ?)", (rid, mark, now, actor, reason[:500])).rowcount
                for rid in ids)
    audit.append(conn, actor, "recording.mark", mark, {"recordings": ids[:200], "count": len(ids),
                                                       "added": added, "reason": reason[:500]})
    return added


def unmark_recording(conn: sqlite3.Connection, recording_id: int, mark: str, *, actor: str,
                     cleared: frozenset[str], reason: str) -> None:
    """Take a mark off a recording: only someone cleared for the mark, with a reason."""
    check_mark(mark)
    if mark not in cleared:
        raise MarkError(f"{mark}: you are not cleared for this mark")
    if not reason.strip():
        raise MarkError("reason: required to take a mark off")
    if not conn.execute("DELETE FROM recording_marks WHERE recording_id = ? AND mark = ?",
                        (recording_id, mark)).rowcount:
        raise MarkError(f"recording {recording_id} has no mark {mark} of its own")
    audit.append(conn, actor, "recording.unmark", str(recording_id), {"mark": mark, "reason": reason[:500]})


def mark_case(conn: sqlite3.Connection, case_id: int, mark: str, *, actor: str, cleared: frozenset[str],
              reason: str = "") -> None:
    check_mark(mark)
    number = conn.execute("SELECT number FROM cases WHERE id = ?", (case_id,)).fetchone()
    if number is None:
        raise MarkError(f"no case {case_id}")
    if case_withheld(conn, case_id, cleared):
        raise MarkError(f"case {case_id}: not visible to you")
    if conn.execute("INSERT OR IGNORE INTO case_marks (case_id, mark, marked_at, marked_by, reason)"
                    " VALUES (?, ?, ?, ?, ?)", (case_id, mark, iso(utcnow()), actor, reason[:500])).rowcount:
        audit.append(conn, actor, "case.mark", number[0], {"mark": mark, "reason": reason[:500]})


def unmark_case(conn: sqlite3.Connection, case_id: int, mark: str, *, actor: str, cleared: frozenset[str],
                reason: str) -> None:
    check_mark(mark)
    if mark not in cleared:
        raise MarkError(f"{mark}: you are not cleared for this mark")
    if not reason.strip():
        raise MarkError("reason: required to take a mark off")
    number = conn.execute("SELECT number FROM cases WHERE id = ?", (case_id,)).fetchone()
    if number is None or not conn.execute("DELETE FROM case_marks WHERE case_id = ? AND mark = ?",
                                          (case_id, mark)).rowcount:
        raise MarkError(f"case {case_id} has no mark {mark}")
    audit.append(conn, actor, "case.unmark", number[0], {"mark": mark, "reason": reason[:500]})


def grant(conn: sqlite3.Connection, user_id: int, mark: str, *, actor: str) -> None:
    check_mark(mark)
    name = conn.execute("SELECT name FROM users WHERE id = ?", (user_id,)).fetchone()
    if name is None:
        raise MarkError(f"no user {user_id}")
    if conn.execute("INSERT OR IGNORE INTO user_clearances (user_id, mark, granted_at, granted_by)"
                    " VALUES (?, ?, ?, ?)", (user_id, mark, iso(utcnow()), actor)).rowcount:
        audit.append(conn, actor, "clearance.grant", name[0], {"mark": mark})


def revoke(conn: sqlite3.Connection, user_id: int, mark: str, *, actor: str) -> None:
    check_mark(mark)
    name = conn.execute("SELECT name FROM users WHERE id = ?", (user_id,)).fetchone()
    if name is None:
        raise MarkError(f"no user {user_id}")
    if conn.execute("DELETE FROM user_clearances WHERE user_id = ? AND mark = ?", (user_id, mark)).rowcount:
        audit.append(conn, actor, "clearance.revoke", name[0], {"mark": mark})


def clearances(conn: sqlite3.Connection) -> dict[int, list[dict]]:
    """Every account's clearances by name."""
    out: dict[int, list[dict]] = {}
    for r in conn.execute("SELECT * FROM user_clearances ORDER BY mark"):
        out.setdefault(r["user_id"], []).append(dict(r))
    return out
