"""Release approval (regulation articles 14 and 16): no recording leaves the station for public
use, a party or an outside body without a leader's approval.

``pending`` → a leader ``approved`` or ``refused`` it, with a reason (never the requester)
→ only an approved release can be exported: a package with the files and their hashes
(:mod:`appliance.vault.export`) and, where asked, a disc (a burn job of the disc register)
→ ``exported``. Every step, and every download of the package, is audited.
"""

from __future__ import annotations

import sqlite3

from appliance.catalog import approvals, audit
from appliance.catalog.approvals import ApprovalError, choose_recordings, clean_text
from appliance.catalog.confidentiality import withheld
from appliance.timeutil import iso, utcnow

PURPOSES = ("public", "party", "outside_body")
STATES = ("pending", "approved", "refused", "exported")


def create(conn: sqlite3.Connection, recording_ids: list[int], *, purpose: str, recipient: str, reason: str,
           actor: str, cleared: frozenset[str], case_id: int | None = None, want_disc: bool = False) -> int:
    """Request a release of recordings (or of a case's recordings)."""
    if purpose not in PURPOSES:
        raise ApprovalError(f"{purpose!r}: unknown purpose (one of {', '.join(PURPOSES)})")
    ids = choose_recordings(conn, recording_ids, case_id, cleared)
    number = approvals.next_number(conn, "releases", "R")
    rid = int(conn.execute(
        "INSERT INTO releases (number, purpose, recipient, reason, case_id, want_disc, requested_by, requested_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (number, purpose, clean_text(recipient, "recipient", limit=200), clean_text(reason, "reason"), case_id,
         int(want_disc), actor, iso(utcnow()))).lastrowid)
    conn.executemany("INSERT INTO release_recordings (release_id, recording_id) VALUES (?, ?)",
                     [(rid, i) for i in ids])
    audit.append(conn, actor, "release.request", number,
                 {"purpose": purpose, "recipient": recipient.strip(), "recordings": ids[:200], "count": len(ids),
                  "case": case_id, "disc": want_disc})
    return rid


def decide(conn: sqlite3.Connection, release_id: int, *, actor: str, approve: bool, reason: str) -> None:
    approvals.decide(conn, "releases", release_id, actor=actor, approve=approve, reason=reason)


def get(conn: sqlite3.Connection, release_id: int) -> dict | None:
    r = conn.execute("SELECT r.*, c.number AS case_number, j.set_id AS burn_set, j.state AS burn_state"
                     " FROM releases r LEFT JOIN cases c ON c.id = r.case_id"
                     " LEFT JOIN burn_jobs j ON j.id = r.burn_job_id WHERE r.id = ?", (release_id,)).fetchone()
    return dict(r) if r else None


def recordings(conn: sqlite3.Connection, release_id: int) -> list[dict]:
    """The release's recordings with what an export and its record need."""
    return [dict(r) for r in conn.execute(
        "SELECT r.id, r.session_id, r.rel_path, r.vault_path, r.size, r.sha256, r.sm3, r.camera_mtime,"
        " r.duration_s, r.device_serial, r.purged_at, o.name AS officer_name FROM release_recordings x"
        " JOIN recordings r ON r.id = x.recording_id LEFT JOIN officers o ON o.id = r.officer_id"
        " WHERE x.release_id = ? ORDER BY r.camera_mtime, r.id", (release_id,))]


def listing(conn: sqlite3.Connection, *, state: str | None = None, since: str | None = None,
            until: str | None = None, limit: int = 500) -> list[dict]:
    where, args = [], []
    if state:
        where.append("r.state = ?")
        args.append(state)
    if since:
        where.append("r.requested_at >= ?")
        args.append(since)
    if until:
        where.append("r.requested_at < ?")
        args.append(until)
    sql = ("SELECT r.*, c.number AS case_number,"
           " (SELECT COUNT(*) FROM release_recordings x WHERE x.release_id = r.id) AS recordings"
           " FROM releases r LEFT JOIN cases c ON c.id = r.case_id"
           + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY r.id DESC LIMIT ?")
    return [dict(r) for r in conn.execute(sql, (*args, limit))]


def exportable(conn: sqlite3.Connection, release_id: int, cleared: frozenset[str]) -> tuple[dict, list[dict]]:
    """The release and its recordings, when it may be exported now by someone ``cleared``."""
    release = get(conn, release_id)
    if release is None:
        raise ApprovalError(f"no release {release_id}")
    if release["state"] not in ("approved", "exported"):
        raise ApprovalError(f"{release['number']}: not approved ({release['state']}); nothing leaves "
                            "the station without a leader's approval")
    recs = recordings(conn, release_id)
    if any(r["purged_at"] for r in recs):
        raise ApprovalError(f"{release['number']}: a recording was purged since the approval")
    hidden = withheld(conn, [r["id"] for r in recs], cleared)
    if hidden:
        raise ApprovalError(f"recording {min(hidden)}: not visible to you")
    return release, recs


def record_export(conn: sqlite3.Connection, release_id: int, *, actor: str, file: str, sha256: str,
                  size: int) -> None:
    release = get(conn, release_id)
    if release is None or release["state"] not in ("approved", "exported"):
        raise ApprovalError(f"release {release_id}: not approved")
    conn.execute("UPDATE releases SET state = 'exported', exported_by = ?, exported_at = ?, export_file = ?,"
                 " export_sha256 = ?, export_bytes = ? WHERE id = ?",
                 (actor, iso(utcnow()), file, sha256, size, release_id))
    audit.append(conn, actor, "release.export", release["number"],
                 {"file": file, "sha256": sha256, "bytes": size, "approved_by": release["decided_by"]})


def record_download(conn: sqlite3.Connection, release_id: int, *, actor: str, ip: str) -> dict:
    release = get(conn, release_id)
    if release is None or release["state"] != "exported" or not release["export_file"]:
        raise ApprovalError(f"release {release_id}: no export to download")
    audit.append(conn, actor, "release.download", release["number"],
                 {"sha256": release["export_sha256"], "ip": ip})
    return release


def attach_burn(conn: sqlite3.Connection, release_id: int, job_id: int, *, actor: str) -> None:
    release = get(conn, release_id)
    assert release is not None
    conn.execute("UPDATE releases SET burn_job_id = ? WHERE id = ?", (job_id, release_id))
    set_id = conn.execute("SELECT set_id FROM burn_jobs WHERE id = ?", (job_id,)).fetchone()[0]
    audit.append(conn, actor, "release.disc", release["number"], {"burn_job": job_id, "set": set_id})
