"""Retention (regulation article 7 and the national six-month minimum): the only way evidence
is ever deleted.

* Recordings in a long-term category (the six kinds of case of art. 7), on a case that is
  not closed, on a release or judicial request that is pending or approved, are never
  purge candidates. Everything else becomes one when it was both recorded and ingested
  more than the configured period ago (:func:`appliance.regulation.retention_months`,
  never under six months).
* A purge list is proposed (:func:`propose`: the candidates of that moment, with the
  cutoff), approved or refused by a leader who did not propose it
  (:func:`appliance.catalog.approvals.decide`), then carried out (:func:`carry_out`):
  every item is checked again at that moment and kept, with the reason, if it no longer
  qualifies or, where the vault is replicated, if headquarters has no confirmed copy of
  its session yet; each purged file gets its own audit row before the file is removed.
* A purged recording keeps its catalog row (what it was, its hash, under which list who
  purged it); only its file goes. On ZFS the space comes back only when no snapshot holds
  the file any more: a session's snapshot is released and destroyed once none of its
  recordings is left (:meth:`appliance.vault.base.Vault.release_snapshot`), and one new
  snapshot, proven to hold every file that was not purged, stands in for the other held
  snapshots (:meth:`appliance.vault.base.Vault.reseal`); the sessions then refer to it.

The database refuses the rest by itself (migration 4's triggers): a recording row is never
deleted, and ``purged_at`` cannot be set without an approved list or on a recording in a
long-term category or on an open case.
"""

from __future__ import annotations

import calendar
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.catalog import approvals, audit
from appliance.catalog.approvals import ApprovalError
from appliance.errors import VaultError
from appliance.regulation import MIN_RETENTION_MONTHS
from appliance.timeutil import iso, utcnow
from appliance.vault.copier import hash_file

if TYPE_CHECKING:
    from appliance.catalog.db import Catalog
    from appliance.vault.base import Reseal, Vault

log = logging.getLogger(__name__)

MAX_LIST = 20_000
_REMOVE_BATCH = 200

#: Why a recording is not a candidate: (reason, SQL that is true when the reason holds).
PROTECTIONS: tuple[tuple[str, str], ...] = (
    ("long-term category (art. 7)",
     "EXISTS (SELECT 1 FROM recording_categories x JOIN categories k ON k.key = x.category"
     " WHERE x.recording_id = r.id AND k.long_term = 1)"),
    ("on a case that is not closed, or on a long-term case",
     "EXISTS (SELECT 1 FROM recording_cases x JOIN cases c ON c.id = x.case_id WHERE x.recording_id = r.id"
     " AND (c.status != 'closed' OR c.category IN (SELECT key FROM categories WHERE long_term = 1)))"),
    ("on a pending or approved release",
     "EXISTS (SELECT 1 FROM release_recordings x JOIN releases l ON l.id = x.release_id"
     " WHERE x.recording_id = r.id AND l.state IN ('pending', 'approved'))"),
    ("on a pending or approved judicial request",
     "EXISTS (SELECT 1 FROM judicial_recordings x JOIN judicial_requests j ON j.id = x.request_id"
     " WHERE x.recording_id = r.id AND j.state IN ('pending', 'approved'))"),
)
_PROTECTED = " OR ".join(sql for _reason, sql in PROTECTIONS)


def months_before(moment: datetime, months: int) -> datetime:
    """The same day and time ``months`` calendar months earlier (the 31st becomes the month's last day)."""
    index = moment.year * 12 + moment.month - 1 - months
    year, month = divmod(index, 12)
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return moment.replace(year=year, month=month + 1, day=day)


def cutoff(now: datetime, months: int) -> datetime:
    if months < MIN_RETENTION_MONTHS:
        raise ApprovalError(f"retention: at least {MIN_RETENTION_MONTHS} months (the national minimum)")
    return months_before(now.astimezone(timezone.utc), months)


def _eligible_sql(alias_cutoff: str = "?") -> str:
    return (f"r.purged_at IS NULL AND r.ingested_at < {alias_cutoff} AND r.camera_mtime < {alias_cutoff}"
            f" AND NOT ({_PROTECTED})")


def candidates(conn: sqlite3.Connection, *, now: datetime, months: int, limit: int = MAX_LIST) -> list[dict]:
    """Recordings that may be put on a purge list now, oldest first (not on another open list)."""
    edge = iso(cutoff(now, months))
    return [dict(r) for r in conn.execute(
        "SELECT r.id, r.rel_path, r.vault_path, r.size, r.sha256, r.camera_mtime, r.ingested_at, r.device_serial,"
        " r.session_id, o.name AS officer_name FROM recordings r LEFT JOIN officers o ON o.id = r.officer_id"
        f" WHERE {_eligible_sql()} AND NOT EXISTS (SELECT 1 FROM purge_items pi JOIN purge_lists p"
        " ON p.id = pi.list_id WHERE pi.recording_id = r.id AND pi.state = 'listed'"
        " AND p.state IN ('pending', 'approved', 'executing'))"
        " ORDER BY r.ingested_at, r.id LIMIT ?", (edge, edge, limit))]


def protected_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """How many live recordings each protection keeps (the retention page)."""
    return {reason: conn.execute(f"SELECT COUNT(*) FROM recordings r WHERE r.purged_at IS NULL AND {sql}")
            .fetchone()[0] for reason, sql in PROTECTIONS}


def why_kept(conn: sqlite3.Connection, recording_id: int, edge: str) -> str | None:
    """Why a recording may not be purged now (None: it may)."""
    r = conn.execute("SELECT * FROM recordings r WHERE r.id = ?", (recording_id,)).fetchone()
    if r is None:
        return "no such recording"
    if r["purged_at"]:
        return "purged already"
    if r["ingested_at"] >= edge or r["camera_mtime"] >= edge:
        return "younger than the retention period"
    for reason, sql in PROTECTIONS:
        if conn.execute(f"SELECT {sql} FROM recordings r WHERE r.id = ?", (recording_id,)).fetchone()[0]:
            return reason
    return None


def propose(conn: sqlite3.Connection, *, now: datetime, months: int, actor: str) -> int:
    """Put today's candidates on a new purge list that waits for a leader's approval."""
    open_list = conn.execute("SELECT number FROM purge_lists WHERE state IN ('pending', 'approved', 'executing')"
                             ).fetchone()
    if open_list:
        raise ApprovalError(f"purge list {open_list[0]} is still open: decide or finish it first")
    found = candidates(conn, now=now, months=months)
    if not found:
        raise ApprovalError("no recording is due for purging")
    number = approvals.next_number(conn, "purge_lists", "P")
    edge = iso(cutoff(now, months))
    list_id = int(conn.execute(
        "INSERT INTO purge_lists (number, months, cutoff, requested_by, requested_at) VALUES (?, ?, ?, ?, ?)",
        (number, months, edge, actor, iso(utcnow()))).lastrowid)
    conn.executemany("INSERT INTO purge_items (list_id, recording_id) VALUES (?, ?)", [(list_id, r["id"]) for r in found])
    audit.append(conn, actor, "purge.propose", number,
                 {"months": months, "cutoff": edge, "recordings": len(found), "bytes": sum(r["size"] for r in found)})
    return list_id


def decide(conn: sqlite3.Connection, list_id: int, *, actor: str, approve: bool, reason: str) -> None:
    approvals.decide(conn, "purge_lists", list_id, actor=actor, approve=approve, reason=reason)


def get(conn: sqlite3.Connection, list_id: int) -> dict | None:
    r = conn.execute(
        "SELECT p.*, (SELECT COUNT(*) FROM purge_items i WHERE i.list_id = p.id) AS items,"
        " (SELECT COUNT(*) FROM purge_items i WHERE i.list_id = p.id AND i.state = 'purged') AS purged,"
        " (SELECT COUNT(*) FROM purge_items i WHERE i.list_id = p.id AND i.state = 'kept') AS kept,"
        " (SELECT COALESCE(SUM(r.size), 0) FROM purge_items i JOIN recordings r ON r.id = i.recording_id"
        "  WHERE i.list_id = p.id) AS bytes FROM purge_lists p WHERE p.id = ?", (list_id,)).fetchone()
    return dict(r) if r else None


def items(conn: sqlite3.Connection, list_id: int, limit: int = MAX_LIST) -> list[dict]:
    return [dict(r) for r in conn.execute(
        "SELECT i.*, r.rel_path, r.size, r.sha256, r.camera_mtime, r.ingested_at, r.device_serial, r.session_id,"
        " o.name AS officer_name FROM purge_items i JOIN recordings r ON r.id = i.recording_id"
        " LEFT JOIN officers o ON o.id = r.officer_id WHERE i.list_id = ? ORDER BY r.ingested_at, r.id LIMIT ?",
        (list_id, limit))]


def listing(conn: sqlite3.Connection, limit: int = 200) -> list[dict]:
    return [dict(r) for r in conn.execute(
        "SELECT p.*, (SELECT COUNT(*) FROM purge_items i WHERE i.list_id = p.id) AS items,"
        " (SELECT COUNT(*) FROM purge_items i WHERE i.list_id = p.id AND i.state = 'purged') AS purged"
        " FROM purge_lists p ORDER BY p.id DESC LIMIT ?", (limit,))]


# -- carrying a list out -------------------------------------------------------------------

@dataclass
class PurgeResult:
    number: str
    purged: int = 0
    kept: list[tuple[int, str]] = field(default_factory=list)
    removed: int = 0
    missing: int = 0
    snapshots: list[str] = field(default_factory=list)
    resealed: str | None = None            # the snapshot that now holds the sessions kept
    retired: list[str] = field(default_factory=list)
    reseal_problem: str | None = None      # why the held snapshots had to stay


#: Kept at carry-out because headquarters has no confirmed copy of the session yet.
NOT_AT_HQ = "not yet at headquarters (replication)"

#: Given a session's snapshot (None: never sealed), whether headquarters lacks it
#: (:func:`appliance.vault.replication.waiting_for_hq`); None when nothing is replicated.
WaitsForHq = Callable[[str | None], bool]


def begin(conn: sqlite3.Connection, list_id: int, *, actor: str,
          waits_for_hq: WaitsForHq | None = None) -> str:
    """Mark every item purged or kept, each purge with its audit row (one transaction).

    With ``waits_for_hq``, a recording whose session has not reached headquarters is kept:
    a purge must never remove the only copy of a recording that HQ was meant to hold.
    """
    plist = get(conn, list_id)
    if plist is None:
        raise ApprovalError(f"no purge list {list_id}")
    if plist["state"] not in ("approved", "executing"):
        raise ApprovalError(f"{plist['number']}: not approved ({plist['state']}); nothing is purged without "
                            "a leader's approval")
    if plist["state"] == "approved":
        conn.execute("UPDATE purge_lists SET state = 'executing', executed_by = ?, executed_at = ? WHERE id = ?",
                     (actor, iso(utcnow()), list_id))
        audit.append(conn, actor, "purge.begin", plist["number"], {"approved_by": plist["decided_by"]})
    now = iso(utcnow())
    for item in conn.execute("SELECT i.recording_id, r.rel_path, r.vault_path, r.sha256, r.size, s.snapshot"
                             " FROM purge_items i JOIN recordings r ON r.id = i.recording_id"
                             " JOIN sessions s ON s.id = r.session_id"
                             " WHERE i.list_id = ? AND i.state = 'listed'", (list_id,)).fetchall():
        reason = why_kept(conn, item["recording_id"], plist["cutoff"])
        if reason is None and waits_for_hq is not None and waits_for_hq(item["snapshot"]):
            reason = NOT_AT_HQ
        if reason is not None:
            conn.execute("UPDATE purge_items SET state = 'kept', note = ? WHERE list_id = ? AND recording_id = ?",
                         (reason, list_id, item["recording_id"]))
            audit.append(conn, actor, "purge.kept", str(item["recording_id"]),
                         {"list": plist["number"], "reason": reason, "file": item["rel_path"]})
            continue
        conn.execute("UPDATE recordings SET purged_at = ?, purged_by = ?, purge_list_id = ? WHERE id = ?",
                     (now, actor, list_id, item["recording_id"]))
        conn.execute("UPDATE purge_items SET state = 'purged' WHERE list_id = ? AND recording_id = ?",
                     (list_id, item["recording_id"]))
        audit.append(conn, actor, "recording.purge", str(item["recording_id"]),
                     {"list": plist["number"], "file": item["vault_path"], "sha256": item["sha256"],
                      "size": item["size"], "approved_by": plist["decided_by"]})
    return plist["number"]


def _to_remove(conn: sqlite3.Connection, list_id: int) -> list[tuple[int, str]]:
    return [(r[0], r[1]) for r in conn.execute(
        "SELECT i.recording_id, r.vault_path FROM purge_items i JOIN recordings r ON r.id = i.recording_id"
        " WHERE i.list_id = ? AND i.state = 'purged' AND i.removed_at IS NULL AND r.purged_at IS NOT NULL",
        (list_id,))]


def _removed(conn: sqlite3.Connection, list_id: int, recording_ids: list[int]) -> None:
    now = iso(utcnow())
    conn.executemany("UPDATE purge_items SET removed_at = ? WHERE list_id = ? AND recording_id = ?",
                     [(now, list_id, rid) for rid in recording_ids])


def expired_sessions(conn: sqlite3.Connection, list_id: int) -> list[tuple[str, str]]:
    """Sessions touched by the list whose every recording is purged and whose snapshot is still held."""
    return [(r[0], r[1]) for r in conn.execute(
        "SELECT DISTINCT s.id, s.snapshot FROM purge_items i JOIN recordings r ON r.id = i.recording_id"
        " JOIN sessions s ON s.id = r.session_id WHERE i.list_id = ? AND s.snapshot IS NOT NULL"
        " AND s.snapshot_released_at IS NULL"
        " AND NOT EXISTS (SELECT 1 FROM recordings x WHERE x.session_id = s.id AND x.purged_at IS NULL)",
        (list_id,))]


def _snapshot_released(conn: sqlite3.Connection, session_id: str, snapshots: list[str], number: str,
                       actor: str) -> None:
    conn.execute("UPDATE sessions SET snapshot_released_at = ? WHERE id = ?", (iso(utcnow()), session_id))
    audit.append(conn, actor, "snapshot.expire", session_id, {"snapshots": snapshots, "list": number})


def _finish(conn: sqlite3.Connection, list_id: int, result: PurgeResult, actor: str) -> None:
    conn.execute("UPDATE purge_lists SET state = 'done', finished_at = ? WHERE id = ?", (iso(utcnow()), list_id))
    audit.append(conn, actor, "purge.done", result.number,
                 {"purged": result.purged, "kept": len(result.kept), "files_removed": result.removed,
                  "files_missing": result.missing, "snapshots_expired": len(result.snapshots),
                  "resealed": result.resealed, "snapshots_retired": len(result.retired)})


def carry_out(catalog: "Catalog", vault: "Vault", list_id: int, *, actor: str,
              waits_for_hq: WaitsForHq | None = None) -> PurgeResult:
    """Carry out an approved list (blocking: run it in a thread). Safe to run again after a
    crash: items already decided stay decided, files already removed are not looked for.
    ``waits_for_hq``: see :func:`begin`."""
    number = catalog.run(begin, list_id, actor=actor, waits_for_hq=waits_for_hq)
    result = PurgeResult(number)
    counts = catalog.run(lambda c: c.execute(
        "SELECT state, COUNT(*) FROM purge_items WHERE list_id = ? GROUP BY state", (list_id,)).fetchall())
    result.purged = dict((r[0], r[1]) for r in counts).get("purged", 0)
    result.kept = catalog.run(lambda c: [(r[0], r[1]) for r in c.execute(
        "SELECT recording_id, note FROM purge_items WHERE list_id = ? AND state = 'kept'", (list_id,))])
    todo = catalog.run(_to_remove, list_id)
    for start in range(0, len(todo), _REMOVE_BATCH):
        batch = todo[start:start + _REMOVE_BATCH]
        done = []
        for rid, vault_path in batch:
            try:
                if vault.remove_purged(vault_path):
                    result.removed += 1
                else:
                    result.missing += 1
            except (OSError, VaultError) as exc:
                log.error("purge %s: %s could not be removed: %s", number, vault_path, exc)
                catalog.run(_removed, list_id, done)
                raise VaultError(f"{vault_path}: cannot remove: {exc}") from exc
            done.append(rid)
        catalog.run(_removed, list_id, done)
    for session_id, snapshot in catalog.run(expired_sessions, list_id):
        released = vault.release_snapshot(session_id)
        catalog.run(_snapshot_released, session_id, released or [snapshot], number, actor)
        result.snapshots.extend(released)
    if result.purged and vault.snapshots:
        _reseal(catalog, vault, result, actor)
    catalog.run(_finish, list_id, result, actor)
    return result


def _reseal(catalog: "Catalog", vault: "Vault", result: PurgeResult, actor: str) -> None:
    """Let one new snapshot stand in for the held ones, so the purged files' space comes
    back (:meth:`appliance.vault.base.Vault.reseal`). The catalog points the sessions at the
    new snapshot before the old ones go: a crash in between leaves old snapshots held that
    nothing refers to, which the next purge's reseal takes along."""
    purged = catalog.run(lambda c: {r[0] for r in c.execute(
        "SELECT vault_path FROM recordings WHERE purged_at IS NOT NULL")})

    def same(rel: str, path: Path) -> bool:
        expected = catalog.run(catalogued_sha256, rel)
        return expected is not None and hash_file(path).sha256 == expected

    try:
        reseal = vault.reseal(result.number, purged.__contains__, same)
    except VaultError as exc:
        log.error("purge %s: %s", result.number, exc)
        result.reseal_problem = str(exc)
        catalog.run(audit.append, actor, "snapshot.reseal-refused", result.number, {"reason": str(exc)})
        return
    if reseal is None:
        return
    retire = catalog.run(_resealed, reseal, result.number, actor)
    result.resealed = reseal.snapshot
    result.retired = vault.retire(retire)


def catalogued_sha256(conn: sqlite3.Connection, vault_path: str) -> str | None:
    """The SHA-256 the catalog has for a file of the vault: a recording, a verified file of a
    session that never committed, or a session's manifest."""
    for sql in ("SELECT sha256 FROM recordings WHERE vault_path = ?",
                "SELECT sha256 FROM session_files WHERE vault_path = ?",
                "SELECT manifest_sha256 FROM sessions WHERE vault_dir || '/manifest.json' = ?"):
        row = conn.execute(sql, (vault_path,)).fetchone()
        if row is not None and row[0]:
            return row[0]
    return None


def _resealed(conn: sqlite3.Connection, reseal: "Reseal", number: str, actor: str) -> list[str]:
    """Point the sessions at the new snapshot; return the old snapshots that may go: those
    sessions referred to, and earlier reseals. A session sealed while the purge ran may not
    refer to its snapshot yet: that one stays, for the next purge."""
    referenced = {r[0] for r in conn.execute(
        "SELECT DISTINCT snapshot FROM sessions WHERE snapshot IS NOT NULL AND snapshot_released_at IS NULL")}
    retire = [s for s in reseal.older if s in referenced or s in reseal.own]
    marks = ",".join("?" * len(retire))
    moved = conn.execute(f"UPDATE sessions SET snapshot = ? WHERE snapshot_released_at IS NULL AND snapshot IN ({marks})",
                         (reseal.snapshot, *retire)).rowcount if retire else 0
    audit.append(conn, actor, "snapshot.reseal", number,
                 {"snapshot": reseal.snapshot, "sessions": moved, "retired": retire[:50],
                  "retired_count": len(retire)})
    return retire
