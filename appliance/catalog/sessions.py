"""Ingest sessions, their verified files, and the recordings they commit."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from datetime import datetime

from appliance.catalog import audit, continuity, registry
from appliance.timeutil import camera_time, iso, utcnow

# States a session passes through; the last three are terminal.
ACTIVE_STATES = ("docked", "identifying", "mounting", "copying", "verifying", "committing",
                 "clock-sync", "wiping")
TERMINAL_STATES = ("done", "failed", "interrupted")


@dataclass(frozen=True)
class SessionRow:
    """A session as the catalog has it."""

    id: str
    device_serial: str
    slot: str
    state: str
    reason: str | None
    quarantined: bool
    vault_dir: str
    started_at: str
    snapshot: str | None = None


@dataclass(frozen=True)
class VerifiedFile:
    """A file that is verified in the vault (committed or not yet)."""

    rel_path_raw: bytes
    rel_path: str
    vault_path: str
    size: int
    mtime_ns: int
    sha256: str
    sm3: str | None = None


@dataclass(frozen=True)
class NewSession:
    """What is known when a session starts."""

    id: str
    device_serial: str
    device_id: int | None
    officer_id: int | None
    slot: str
    port_path: str
    profile: str
    quarantined: bool
    vault_dir: str
    details: dict = field(default_factory=dict)


def _row(r: sqlite3.Row) -> SessionRow:
    return SessionRow(r["id"], r["device_serial"], r["slot"], r["state"], r["reason"],
                      bool(r["quarantined"]), r["vault_dir"], r["started_at"], r["snapshot"])


def create(conn: sqlite3.Connection, s: NewSession) -> SessionRow:
    """Start a session row in state ``copying``'s predecessor, audited."""
    now = iso(utcnow())
    conn.execute(
        "INSERT INTO sessions (id, device_serial, device_id, officer_id, slot, port_path, profile,"
        " state, quarantined, vault_dir, started_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, 'mounting', ?, ?, ?, ?)",
        (s.id, s.device_serial, s.device_id, s.officer_id, s.slot, s.port_path, s.profile,
         int(s.quarantined), s.vault_dir, now, now))
    audit.append(conn, audit.SYSTEM, "session.start", s.id,
                 {"device": s.device_serial, "slot": s.slot, "quarantined": s.quarantined, **s.details})
    return get(conn, s.id)  # type: ignore[return-value]


def get(conn: sqlite3.Connection, session_id: str) -> SessionRow | None:
    r = conn.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone()
    return _row(r) if r else None


def resumable(conn: sqlite3.Connection, device_serial: str) -> SessionRow | None:
    """The newest uncommitted session of this camera that ended early: a re-docking continues it."""
    r = conn.execute(
        "SELECT * FROM sessions WHERE device_serial = ? AND state IN ('interrupted', 'failed')"
        " AND manifest_sha256 IS NULL ORDER BY started_at DESC LIMIT 1", (device_serial,)).fetchone()
    return _row(r) if r else None


def resume(conn: sqlite3.Connection, session_id: str, slot: str) -> None:
    """Reopen an interrupted session on the slot where its camera was docked again."""
    conn.execute("UPDATE sessions SET slot = ?, state = 'mounting', reason = NULL, finished_at = NULL,"
                 " updated_at = ? WHERE id = ?", (slot, iso(utcnow()), session_id))
    audit.append(conn, audit.SYSTEM, "session.resume", session_id, {"slot": slot})


def record_snapshot(conn: sqlite3.Connection, session_id: str, snapshot: str | None) -> None:
    conn.execute("UPDATE sessions SET snapshot = ? WHERE id = ?", (snapshot, session_id))


def set_state(conn: sqlite3.Connection, session_id: str, state: str, reason: str | None = None) -> None:
    """Move a session to a new state; terminal states are audited with their reason."""
    now = iso(utcnow())
    finished = now if state in TERMINAL_STATES else None
    conn.execute("UPDATE sessions SET state = ?, reason = ?, updated_at = ?, finished_at = ?"
                 " WHERE id = ?", (state, reason, now, finished, session_id))
    if state in TERMINAL_STATES or state == "copying":
        audit.append(conn, audit.SYSTEM, f"session.{state}", session_id,
                     {"reason": reason} if reason else {})


def set_totals(conn: sqlite3.Connection, session_id: str, files: int, size: int) -> None:
    conn.execute("UPDATE sessions SET files_total = ?, bytes_total = ? WHERE id = ?",
                 (files, size, session_id))


def add_verified_file(conn: sqlite3.Connection, session_id: str, f: VerifiedFile) -> None:
    """Record a file whose copy is verified and renamed to its final name."""
    conn.execute(
        "INSERT OR REPLACE INTO session_files (session_id, rel_path_raw, rel_path, vault_path, size,"
        " mtime_ns, sha256, sm3, verified_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (session_id, f.rel_path_raw, f.rel_path, f.vault_path, f.size, f.mtime_ns, f.sha256, f.sm3,
         iso(utcnow())))


def verified_files(conn: sqlite3.Connection, session_id: str) -> list[VerifiedFile]:
    rows = conn.execute("SELECT * FROM session_files WHERE session_id = ? ORDER BY rel_path_raw",
                        (session_id,)).fetchall()
    return [_verified(r) for r in rows]


def _verified(r: sqlite3.Row) -> VerifiedFile:
    return VerifiedFile(bytes(r["rel_path_raw"]), r["rel_path"], r["vault_path"], r["size"],
                        r["mtime_ns"], r["sha256"], r["sm3"])


def already_ingested(conn: sqlite3.Connection, device_serial: str) -> set[tuple[bytes, int, int]]:
    """(path, size, mtime) of every file of this camera that is a committed recording."""
    rows = conn.execute("SELECT rel_path_raw, size, mtime_ns FROM recordings WHERE device_serial = ?",
                        (device_serial,))
    return {(bytes(r[0]), r[1], r[2]) for r in rows}


def commit(conn: sqlite3.Connection, session_id: str, *, manifest_sha256: str,
           camera_newest: datetime | None, clock_drift_s: float | None, snapshot: str | None,
           camera_tz: str = "UTC") -> int:
    """Turn the session's verified files into recordings, in the caller's one transaction."""
    s = conn.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone()
    now = iso(utcnow())
    files = verified_files(conn, session_id)
    for f in files:
        recorded = iso(camera_time(f.mtime_ns, camera_tz))
        # The recording belongs to whoever held the camera when it was recorded (art. 11).
        known, officer_id = registry.officer_at(conn, s["device_serial"], recorded)
        conn.execute(
            "INSERT INTO recordings (session_id, device_serial, officer_id, rel_path_raw, rel_path,"
            " vault_path, size, mtime_ns, camera_mtime, sha256, sm3, ingested_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (session_id, s["device_serial"], officer_id if known and not s["quarantined"] else s["officer_id"],
             f.rel_path_raw, f.rel_path, f.vault_path, f.size, f.mtime_ns, recorded, f.sha256, f.sm3, now))
    conn.execute("DELETE FROM session_files WHERE session_id = ?", (session_id,))
    conn.execute(
        "UPDATE sessions SET manifest_sha256 = ?, camera_newest_mtime = ?, clock_drift_s = ?,"
        " snapshot = ?, files_total = ?, bytes_total = ?, updated_at = ? WHERE id = ?",
        (manifest_sha256, iso(camera_newest) if camera_newest else None, clock_drift_s, snapshot,
         len(files), sum(f.size for f in files), now, session_id))
    audit.append(conn, audit.SYSTEM, "session.commit", session_id,
                 {"files": len(files), "bytes": sum(f.size for f in files),
                  "manifest_sha256": manifest_sha256, "snapshot": snapshot})
    return len(files)


def committed_files(conn: sqlite3.Connection, session_id: str) -> list[VerifiedFile]:
    """The recordings a session committed (what a wipe may delete from the camera)."""
    rows = conn.execute("SELECT * FROM recordings WHERE session_id = ?", (session_id,)).fetchall()
    return [_verified(r) for r in rows]


def record_clock_sync(conn: sqlite3.Connection, session_id: str, written: str) -> None:
    conn.execute("UPDATE sessions SET clock_synced_at = ? WHERE id = ?", (iso(utcnow()), session_id))
    audit.append(conn, audit.SYSTEM, "camera.clock-sync", session_id, {"written": written})


def record_wipe(conn: sqlite3.Connection, session_id: str, deleted: list[str], kept: list[str]) -> None:
    conn.execute("UPDATE sessions SET wiped_files = ? WHERE id = ?", (len(deleted), session_id))
    audit.append(conn, audit.SYSTEM, "camera.wipe", session_id,
                 {"deleted": len(deleted), "kept": kept[:50], "kept_count": len(kept)})


def unfinished(conn: sqlite3.Connection) -> list[SessionRow]:
    """Sessions that were active when the daemon last stopped."""
    marks = ",".join("?" * len(ACTIVE_STATES))
    rows = conn.execute(f"SELECT * FROM sessions WHERE state IN ({marks})", ACTIVE_STATES).fetchall()
    return [_row(r) for r in rows]


def unprobed(conn: sqlite3.Connection, limit: int = 50) -> list[tuple[int, str]]:
    """Recordings whose media facts (duration, codec) are not known yet."""
    rows = conn.execute("SELECT id, vault_path FROM recordings WHERE probed_at IS NULL LIMIT ?", (limit,))
    return [(r[0], r[1]) for r in rows]


def set_probe(conn: sqlite3.Connection, recording_id: int, facts: dict) -> None:
    conn.execute(
        "UPDATE recordings SET duration_s = ?, start_time = ?, format = ?, codec = ?, width = ?,"
        " height = ?, probe_error = ?, probed_at = ? WHERE id = ?",
        (facts.get("duration_s"), facts.get("start_time"), facts.get("format"), facts.get("codec"),
         facts.get("width"), facts.get("height"), facts.get("error"), iso(utcnow()), recording_id))
    if facts.get("duration_s"):
        continuity.check_recording(conn, recording_id)   # art. 5, 6: gaps between clips
