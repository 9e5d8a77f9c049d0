"""The one rule every approval of the regulation's workflows follows.

Exceptions (art. 8), releases (art. 16), judicial access (art. 17) and purge lists (art. 7)
are each a request that someone decides. Their tables share the columns
``requested_by, requested_at, state, decided_by, decided_at, decision_reason``, and
:func:`decide` is the only code that writes a decision:

* only a ``pending`` request can be decided, once;
* the requester can never decide their own request (names compare case-insensitively,
  as account names do);
* every decision, approval or refusal, carries who, when and a reason;
* the decision and its audit row are written in the caller's one transaction.

Which *roles* may decide what is the route table's business (:mod:`appliance.web.routes`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from appliance.catalog import audit
from appliance.catalog.confidentiality import withheld
from appliance.errors import ApplianceError
from appliance.timeutil import iso, utcnow

#: request table -> the audit action prefix and the column that names a request to people
TABLES = {
    "exceptions": ("exception", "id"),
    "releases": ("release", "number"),
    "judicial_requests": ("judicial", "number"),
    "purge_lists": ("purge", "number"),
}
DECISIONS = ("approved", "refused")
MAX_REASON = 1000
MAX_RECORDINGS = 5000


class ApprovalError(ApplianceError):
    """审批被拒绝 / approval refused: {}"""


class SelfApproval(ApprovalError):
    """不能审批本人提出的申请 / you cannot decide your own request: {}"""

    def __init__(self, label: str, action: str, requested_by: str) -> None:
        super().__init__(label)
        self.label, self.action, self.requested_by = label, action, requested_by


def record_refusal(conn: sqlite3.Connection, actor: str, exc: SelfApproval) -> None:
    """Audit a refused self-approval (in a transaction of its own: the refused one rolled back)."""
    audit.append(conn, actor, exc.action, exc.label, {"requested_by": exc.requested_by})


def clean_text(value: object, what: str, *, required: bool = True, limit: int = MAX_REASON) -> str:
    """A free-text field from a form: stripped, within ``limit`` characters, present if required."""
    text = str(value or "").strip()
    if required and not text:
        raise ApprovalError(f"{what}: required")
    if len(text) > limit:
        raise ApprovalError(f"{what}: at most {limit} characters")
    if "\x00" in text:
        raise ApprovalError(f"{what}: contains a NUL character")
    return text


def same_person(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and a.strip().casefold() == b.strip().casefold()  # type: ignore[union-attr]


def decide(conn: sqlite3.Connection, table: str, request_id: int, *, actor: str, approve: bool,
           reason: str, extra: dict | None = None) -> sqlite3.Row:
    """Approve or refuse a pending request; returns the request row as it was before."""
    if table not in TABLES:
        raise ValueError(table)
    prefix, label_column = TABLES[table]
    row = conn.execute(f"SELECT * FROM {table} WHERE id = ?", (request_id,)).fetchone()
    if row is None:
        raise ApprovalError(f"no {prefix} request {request_id}")
    label = str(row[label_column])
    reason = clean_text(reason, "reason")
    if row["state"] != "pending":
        raise ApprovalError(f"{label}: already {row['state']}")
    if same_person(row["requested_by"], actor):
        raise SelfApproval(label, f"{prefix}.self-approval-refused", row["requested_by"])
    state = "approved" if approve else "refused"
    conn.execute(f"UPDATE {table} SET state = ?, decided_by = ?, decided_at = ?, decision_reason = ?"
                 " WHERE id = ? AND state = 'pending'", (state, actor, iso(utcnow()), reason, request_id))
    audit.append(conn, actor, f"{prefix}.{'approve' if approve else 'refuse'}", label,
                 {"reason": reason, "requested_by": row["requested_by"], **(extra or {})})
    return row


def pending_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """How many requests of each kind wait for a decision (the approvals page)."""
    return {table: conn.execute(f"SELECT COUNT(*) FROM {table} WHERE state = 'pending'").fetchone()[0]
            for table in TABLES}


def next_number(conn: sqlite3.Connection, table: str, prefix: str) -> str:
    """``<prefix><year>-<serial>``, e.g. ``R2026-0007``: the next free number of the year."""
    year = utcnow().year
    head = f"{prefix}{year}-"
    rows = conn.execute(f"SELECT number FROM {table} WHERE number LIKE ?", (head + "%",)).fetchall()
    serials = [int(r[0][len(head):]) for r in rows if r[0][len(head):].isdigit()]
    return f"{head}{max(serials, default=0) + 1:04d}"


def choose_recordings(conn: sqlite3.Connection, recording_ids: Iterable[int], case_id: int | None,
                      cleared: frozenset[str]) -> list[int]:
    """The recordings a request is about: the ones chosen, and every recording of the case if
    one is named (those whose files are still there). Each must exist, still have its file,
    and be visible to the requester."""
    ids = {int(i) for i in recording_ids}
    if case_id is not None:
        if not conn.execute("SELECT 1 FROM cases WHERE id = ?", (case_id,)).fetchone():
            raise ApprovalError(f"no case {case_id}")
        ids |= {r[0] for r in conn.execute(
            "SELECT x.recording_id FROM recording_cases x JOIN recordings r ON r.id = x.recording_id"
            " WHERE x.case_id = ? AND r.purged_at IS NULL", (case_id,))}
    if not ids:
        raise ApprovalError("no recordings chosen")
    if len(ids) > MAX_RECORDINGS:
        raise ApprovalError(f"at most {MAX_RECORDINGS} recordings in one request")
    ordered = sorted(ids)
    found = {}
    for start in range(0, len(ordered), 500):
        chunk = ordered[start:start + 500]
        q = ",".join("?" * len(chunk))
        found.update({r[0]: r[1] for r in conn.execute(
            f"SELECT id, purged_at FROM recordings WHERE id IN ({q})", chunk)})
    missing = [i for i in ordered if i not in found]
    if missing:
        raise ApprovalError(f"no recording {missing[0]}")
    purged = [i for i in ordered if found[i]]
    if purged:
        raise ApprovalError(f"recording {purged[0]} was purged under the retention rules")
    hidden = withheld(conn, ordered, cleared)
    if hidden:
        raise ApprovalError(f"recording {min(hidden)}: not visible to you")
    return ordered
