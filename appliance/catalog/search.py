"""Finding recordings: by officer, device, date range, case, category and tag.

Pages are keyset-paged (newest first, a cursor of ``(camera time, id)``), never OFFSET,
and every filter combination is driven by one ordered index: a case, a category or a tag
by its link table's ``(key, at, recording_id)`` index, everything else by one of the
``recordings_by_*`` indexes. That keeps a page under a few milliseconds on a catalog of a
million recordings (``appliance bench web``).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field, replace

from appliance.catalog.confidentiality import visible_sql

MAX_LIMIT = 200


@dataclass(frozen=True)
class Query:
    """A search; all filters are optional and combine with AND."""

    officer_id: int | None = None
    device_serial: str | None = None
    since: str | None = None          # ISO UTC, inclusive
    until: str | None = None          # ISO UTC, exclusive
    case_id: int | None = None
    category: str | None = None
    tag_id: int | None = None
    only_officer_id: int | None = None  # the role's restriction (an officer sees own recordings)
    cleared: frozenset[str] | None = None  # confidentiality (art. 3): None only for internal use
    include_purged: bool = False       # purged recordings (files gone by retention) are left out
    cursor: tuple[str, int] | None = None  # the last row of the previous page
    limit: int = 50


@dataclass(frozen=True)
class Page:
    rows: list[dict]
    next_cursor: tuple[str, int] | None
    query: Query = field(default_factory=Query)


_COLUMNS = ("r.id, r.camera_mtime, r.device_serial, r.officer_id, o.name AS officer_name, r.rel_path,"
            " r.size, r.duration_s, r.session_id, r.format, r.codec, r.width, r.height")

_LINKS = {  # filter -> (table, key column)
    "case_id": ("recording_cases", "case_id"),
    "tag_id": ("recording_tags", "tag_id"),
    "category": ("recording_categories", "category"),
}


def search(conn: sqlite3.Connection, q: Query) -> Page:
    """One page of recordings, newest first."""
    limit = max(1, min(q.limit, MAX_LIMIT))
    where: list[str] = []
    args: list[object] = []
    driver = next((name for name in ("case_id", "tag_id", "category") if getattr(q, name) is not None), None)
    if driver:
        table, key = _LINKS[driver]
        source = f"{table} x JOIN recordings r ON r.id = x.recording_id"
        at, rid = "x.at", "x.recording_id"
        where.append(f"x.{key} = ?")
        args.append(getattr(q, driver))
    else:
        source = "recordings r"
        at, rid = "r.camera_mtime", "r.id"
    for name, (table, key) in _LINKS.items():
        value = getattr(q, name)
        if value is not None and name != driver:
            where.append(f"EXISTS (SELECT 1 FROM {table} y WHERE y.{key} = ? AND y.recording_id = r.id)")
            args.append(value)
    officer = q.only_officer_id if q.only_officer_id is not None else q.officer_id
    if q.only_officer_id is not None and q.officer_id not in (None, q.only_officer_id):
        return Page([], None, q)
    if officer is not None:
        where.append("r.officer_id = ?")
        args.append(officer)
    if q.device_serial:
        where.append("r.device_serial = ?")
        args.append(q.device_serial)
    if q.since:
        where.append(f"{at} >= ?")
        args.append(q.since)
    if q.until:
        where.append(f"{at} < ?")
        args.append(q.until)
    if q.cursor:
        where.append(f"({at}, {rid}) < (?, ?)")
        args.extend(q.cursor)
    if not q.include_purged:
        where.append("r.purged_at IS NULL")
    if q.cleared is not None:
        condition, marks = visible_sql(q.cleared)
        if marks:
            where.append(condition)
            args.extend(marks)
    sql = (f"SELECT {_COLUMNS} FROM {source} LEFT JOIN officers o ON o.id = r.officer_id"
           + (" WHERE " + " AND ".join(where) if where else "")
           + f" ORDER BY {at} DESC, {rid} DESC LIMIT ?")
    rows = [dict(r) for r in conn.execute(sql, (*args, limit + 1))]
    more = len(rows) > limit
    rows = rows[:limit]
    cursor = (rows[-1]["camera_mtime"], rows[-1]["id"]) if more else None
    return Page(rows, cursor, replace(q, limit=limit))


def recording(conn: sqlite3.Connection, recording_id: int) -> dict | None:
    """Everything the recording page shows: the file, its hashes, its session, its device."""
    r = conn.execute(
        "SELECT r.*, o.name AS officer_name, s.slot, s.started_at, s.finished_at, s.snapshot,"
        " s.manifest_sha256, s.clock_drift_s, s.clock_synced_at, s.quarantined, s.state AS session_state,"
        " s.vault_dir, s.device_flag, d.brand AS device_brand, d.model AS device_model,"
        " (SELECT number FROM purge_lists p WHERE p.id = r.purge_list_id) AS purge_number"
        " FROM recordings r JOIN sessions s ON s.id = r.session_id"
        " LEFT JOIN officers o ON o.id = r.officer_id"
        " LEFT JOIN devices d ON d.serial = r.device_serial WHERE r.id = ?", (recording_id,)).fetchone()
    if r is None:
        return None
    out = dict(r)
    out.pop("rel_path_raw", None)
    out["discs"] = [dict(d) for d in conn.execute(
        "SELECT d.id, d.label, d.state, d.medium, d.verified_at, x.disc_path FROM disc_recordings x"
        " JOIN discs d ON d.id = x.disc_id WHERE x.recording_id = ? ORDER BY d.id", (recording_id,))]
    return out


def media_path(conn: sqlite3.Connection, recording_id: int) -> tuple[str, str, int | None, str | None] | None:
    """``(vault_path, rel_path, officer_id, purged_at)`` of a recording, for playing it."""
    r = conn.execute("SELECT vault_path, rel_path, officer_id, purged_at FROM recordings WHERE id = ?",
                     (recording_id,)).fetchone()
    return (r[0], r[1], r[2], r[3]) if r else None


def officers(conn: sqlite3.Connection) -> list[tuple[int, str]]:
    return [(r[0], r[1]) for r in conn.execute("SELECT id, name FROM officers ORDER BY name")]


def device_serials(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT serial FROM devices ORDER BY serial")]
