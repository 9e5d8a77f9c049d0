"""``appliance verify``: re-hash the vault against the catalog, the manifests and the snapshots.

Every problem names a file (or a snapshot) and says what is wrong with it:
``differs`` (its hash is not the recorded one), ``missing``, ``new`` (a file in a session
folder that no recording accounts for), ``manifest`` (the manifest was changed or does
not agree with the catalog), ``snapshot`` (the session's snapshot is gone or not held, or
its copy differs from the live file).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from appliance.catalog import audit
from appliance.catalog.db import Catalog
from appliance.errors import VaultError
from appliance.timeutil import iso, utcnow
from appliance.vault.base import Vault
from appliance.vault.copier import PARTIAL_PREFIX, hash_file
from appliance.vault.hashing import hash_bytes
from appliance.vault.layout import FILES, MANIFEST


@dataclass(frozen=True)
class Problem:
    """One thing that is not as the catalog says."""

    kind: str
    path: str
    detail: str


@dataclass
class VerifyReport:
    """What a verify run checked and found."""

    started_at: datetime
    since: datetime | None
    files_checked: int = 0
    bytes_checked: int = 0
    pool_health: str = "UNKNOWN"
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.pool_health in ("ONLINE",)


def verify_vault(catalog: Catalog, vault: Vault, since: datetime | None = None,
                 progress: Callable[[str], None] | None = None) -> VerifyReport:
    """Check every committed session that started at or after ``since``. Blocking."""
    report = VerifyReport(started_at=utcnow(), since=since)
    sessions = catalog.run(_committed_sessions, since)
    for s in sessions:
        if progress:
            progress(s["id"])
        _verify_session(catalog, vault, s, report)
    report.pool_health = vault.health()
    if report.pool_health != "ONLINE":
        report.problems.append(Problem("pool", vault.backend, f"health is {report.pool_health}"))
    catalog.run(_record, report)
    return report


def _committed_sessions(conn: sqlite3.Connection, since: datetime | None) -> list[dict]:
    sql = "SELECT * FROM sessions WHERE manifest_sha256 IS NOT NULL"
    args: tuple = ()
    if since:
        sql += " AND started_at >= ?"
        args = (iso(since),)
    return [dict(r) for r in conn.execute(sql + " ORDER BY started_at", args)]


def _verify_session(catalog: Catalog, vault: Vault, s: dict, report: VerifyReport) -> None:
    folder = vault.root / s["vault_dir"]
    # A recording purged under an approved retention list has no file any more (its row stays).
    recordings = catalog.run(lambda c: [dict(r) for r in c.execute(
        "SELECT * FROM recordings WHERE session_id = ? AND purged_at IS NULL", (s["id"],))])
    purged = catalog.run(lambda c: {r[0] for r in c.execute(
        "SELECT vault_path FROM recordings WHERE session_id = ? AND purged_at IS NOT NULL", (s["id"],))})
    manifest = _check_manifest(folder, s, report)
    listed = {f["vault_path"]: f for f in (manifest or {}).get("files", [])}
    algorithms = ["sha256"] + (["sm3"] if any(r["sm3"] for r in recordings) else [])
    released = bool(s.get("snapshot_released_at"))
    snapshot = s["snapshot"] if not released else None
    if snapshot:
        snapshot = _check_snapshots(vault, snapshot, report)
    elif not released and vault.snapshots:
        # Committed but never sealed (the seal failed, or a crash came between the two).
        report.problems.append(Problem("snapshot", s["vault_dir"], f"session {s['id']} has no snapshot"))
    for r in recordings:
        _verify_file(vault, r, listed.get(r["vault_path"]), algorithms, snapshot, report)
    known = {r["vault_path"] for r in recordings} | purged
    for path in _files_below(folder / FILES):
        rel = vault.relative(path)
        if rel not in known:
            report.problems.append(Problem("new", rel, "in the session folder but not in the catalog"))


def _check_snapshots(vault: Vault, snapshot: str, report: VerifyReport) -> str | None:
    """Report every snapshot of the session that is gone or not held; return the snapshot to
    compare the live files with, or None when one of them is gone."""
    try:
        states = vault.snapshot_states(snapshot)
    except VaultError as exc:
        report.problems.append(Problem("snapshot", snapshot, f"cannot be checked: {exc}"))
        return None
    for name, state in states.items():
        if state != "held":
            report.problems.append(Problem("snapshot", name, f"snapshot is {state}"))
    return None if "missing" in states.values() else snapshot


def _check_manifest(folder: Path, s: dict, report: VerifyReport) -> dict | None:
    path = folder / MANIFEST
    try:
        data = path.read_bytes()
    except OSError:
        report.problems.append(Problem("missing", str(path), "session manifest is missing"))
        return None
    if hash_bytes(data).sha256 != s["manifest_sha256"]:
        report.problems.append(Problem("manifest", str(path), "differs from the hash recorded at commit"))
    try:
        return json.loads(data)
    except ValueError:
        report.problems.append(Problem("manifest", str(path), "is not valid JSON"))
        return None


def _verify_file(vault: Vault, r: dict, listed: dict | None, algorithms: list[str],
                 snapshot: str | None, report: VerifyReport) -> None:
    rel = r["vault_path"]
    path = vault.root / rel
    try:
        digests = hash_file(path, algorithms)
    except (OSError, VaultError):
        report.problems.append(Problem("missing", rel, "recorded in the catalog but not in the vault"))
        return
    report.files_checked += 1
    report.bytes_checked += r["size"]
    if digests.sha256 != r["sha256"] or (r["sm3"] and digests.get("sm3") != r["sm3"]):
        report.problems.append(Problem("differs", rel, f"sha256 is {digests.sha256}, "
                                       f"recorded {r['sha256']}"))
    if listed is None:
        report.problems.append(Problem("manifest", rel, "not listed in the session manifest"))
    elif listed.get("sha256") != r["sha256"] or listed.get("size") != r["size"]:
        report.problems.append(Problem("manifest", rel, "manifest and catalog disagree"))
    if snapshot:
        copy = vault.snapshot_path(snapshot, rel)
        try:
            snap_digest = hash_file(copy, ["sha256"]).sha256 if copy else None
        except (OSError, VaultError):
            snap_digest = "missing"
        if copy and snap_digest != digests.sha256:
            report.problems.append(Problem("snapshot", rel, f"snapshot copy differs from the live file "
                                           f"({snap_digest})"))


def _files_below(folder: Path) -> list[Path]:
    out = []
    for root, _dirs, files in os.walk(folder):
        out.extend(Path(root) / f for f in files if not f.startswith(PARTIAL_PREFIX))
    return out


def _record(conn: sqlite3.Connection, report: VerifyReport) -> None:
    details = json.dumps([asdict(p) for p in report.problems[:1000]], ensure_ascii=False)
    conn.execute(
        "INSERT INTO verify_runs (started_at, finished_at, since, files_checked, bytes_checked, problems,"
        " pool_health, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (iso(report.started_at), iso(utcnow()), iso(report.since) if report.since else None,
         report.files_checked, report.bytes_checked, len(report.problems), report.pool_health, details))
    audit.append(conn, audit.SYSTEM, "vault.verify", "",
                 {"files": report.files_checked, "problems": len(report.problems),
                  "pool": report.pool_health})


def last_run(conn: sqlite3.Connection) -> dict | None:
    """The newest verify run (for metrics and the health page)."""
    row = conn.execute("SELECT * FROM verify_runs ORDER BY id DESC LIMIT 1").fetchone()
    return dict(row) if row else None
