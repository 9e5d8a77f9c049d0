"""The continuity check (regulation articles 5 and 6): recording runs from the start of an
action to its end, without interruption except for technical reasons, without selective
recording, re-recording or inserted footage.

A device's clips form one timeline. A clip ends at its file time (a camera closes the
file when the recording stops; the ingest maps the camera's wall clock to real time) and
starts ``duration`` earlier (ffprobe). Between two consecutive clips of one device:

* ``gap``: the next one starts more than :data:`TOLERANCE_S` after the previous one ended,
  but no more than :data:`MAX_GAP_S` (a longer pause is taken to be a new action);
* ``overlap``: the next one starts more than :data:`TOLERANCE_S` before the previous one
  ended (one camera cannot record two clips at once: its clock moved, or a file was
  inserted);
* ``clock_jump``: the camera numbered the files of one folder in the opposite order of
  their times (``…_0007`` recorded after ``…_0008``): its clock was set back.

``seconds`` is the gap's (or overlap's) length. A flag is never deleted: it is reviewed
(explained, by whom, when) or, when a clip ingested later turns out to lie between the two,
marked ``superseded`` by the system, with that clip named. Flags are found as the clips'
durations become known (:func:`check_recording`, called when ffprobe's facts are stored),
and for a whole catalog by :func:`rescan`.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta

from appliance.catalog import audit
from appliance.errors import ApplianceError
from appliance.timeutil import iso, utcnow

TOLERANCE_S = 2.0      # FAT keeps file times to 2 s
MAX_GAP_S = 600.0      # longer: a new action, not an interruption
KINDS = ("gap", "overlap", "clock_jump")
STATES = ("open", "explained", "superseded")
CLIP_EXTENSIONS = (".mp4", ".mov", ".mkv", ".ts", ".avi", ".mts", ".m4v", ".3gp", ".wav", ".mp3",
                   ".aac", ".amr", ".m4a")
_SEQ = re.compile(r"(\d+)$")
_NEIGHBOURS = 20


class ContinuityError(ApplianceError):
    """连续性核查错误 / continuity review error: {}"""


@dataclass(frozen=True)
class Clip:
    id: int
    session_id: str
    rel_path: str
    end: datetime
    duration: float | None

    @property
    def start(self) -> datetime:
        return self.end - timedelta(seconds=self.duration or 0)

    @property
    def folder(self) -> str:
        return self.rel_path.rsplit("/", 1)[0] if "/" in self.rel_path else ""

    @property
    def sequence(self) -> int | None:
        stem = self.rel_path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        found = _SEQ.search(stem)
        return int(found.group(1)) if found else None


def is_clip(rel_path: str) -> bool:
    return rel_path.lower().endswith(CLIP_EXTENSIONS)


def _clip(r: sqlite3.Row) -> Clip:
    return Clip(r["id"], r["session_id"], r["rel_path"], datetime.fromisoformat(r["camera_mtime"]),
                r["duration_s"] if r["duration_s"] and r["duration_s"] > 0 else None)


_COLUMNS = "id, session_id, rel_path, camera_mtime, duration_s, device_serial"


def judge(a: Clip, b: Clip, tolerance: float = TOLERANCE_S, max_gap: float = MAX_GAP_S
          ) -> tuple[str, float] | None:
    """What is wrong between clip ``a`` and the clip ``b`` that follows it, if anything."""
    delta = (b.start - a.end).total_seconds()
    if (a.session_id == b.session_id and a.folder == b.folder and a.sequence is not None
            and b.sequence is not None and b.sequence < a.sequence):
        return "clock_jump", round(delta, 3)
    if delta > tolerance and delta <= max_gap:
        return "gap", round(delta, 3)
    if delta < -tolerance:
        return "overlap", round(-delta, 3)
    return None


def _neighbour(conn: sqlite3.Connection, clip_row: sqlite3.Row, before: bool) -> sqlite3.Row | None:
    """The nearest clip of the same device before (or after) this one, probed or not."""
    op, order = ("<", "DESC") if before else (">", "ASC")
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM recordings WHERE device_serial = ? AND (camera_mtime, id) {op} (?, ?)"
        f" ORDER BY camera_mtime {order}, id {order} LIMIT ?",
        (clip_row["device_serial"], clip_row["camera_mtime"], clip_row["id"], _NEIGHBOURS)).fetchall()
    return next((r for r in rows if is_clip(r["rel_path"])), None)


def check_recording(conn: sqlite3.Connection, recording_id: int) -> list[int]:
    """Check a clip against its neighbours now that its duration is known; returns new flag ids."""
    row = conn.execute(f"SELECT {_COLUMNS} FROM recordings WHERE id = ?", (recording_id,)).fetchone()
    if row is None or not is_clip(row["rel_path"]) or not row["duration_s"]:
        return []
    prev, nxt = _neighbour(conn, row, True), _neighbour(conn, row, False)
    if prev is not None and nxt is not None:
        _supersede(conn, prev["id"], nxt["id"], row)
    new = []
    for a, b in ((prev, row), (row, nxt)):
        if a is None or b is None or not a["duration_s"] or not b["duration_s"]:
            continue
        found = judge(_clip(a), _clip(b))
        if found is not None:
            flag = _flag(conn, row["device_serial"], _clip(a), _clip(b), *found)
            if flag is not None:
                new.append(flag)
    return new


def _flag(conn: sqlite3.Connection, serial: str, a: Clip, b: Clip, kind: str, seconds: float) -> int | None:
    cur = conn.execute(
        "INSERT OR IGNORE INTO continuity_flags (device_serial, prev_id, next_id, kind, seconds, prev_end,"
        " next_start, detected_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (serial, a.id, b.id, kind, seconds, iso(a.end), iso(b.start), iso(utcnow())))
    if not cur.rowcount:
        return None
    audit.append(conn, audit.SYSTEM, f"continuity.{kind}", serial,
                 {"previous": a.id, "next": b.id, "seconds": seconds})
    return int(cur.lastrowid)


def _supersede(conn: sqlite3.Connection, prev_id: int, next_id: int, between: sqlite3.Row) -> None:
    """Open flags between two clips that are no longer consecutive: a clip lies between them."""
    for flag in conn.execute("SELECT id FROM continuity_flags WHERE prev_id = ? AND next_id = ?"
                             " AND state = 'open'", (prev_id, next_id)).fetchall():
        note = f"recording {between['id']} ({between['rel_path']}) lies between the two clips"
        conn.execute("UPDATE continuity_flags SET state = 'superseded', explanation = ?, reviewed_by = ?,"
                     " reviewed_at = ? WHERE id = ?", (note, audit.SYSTEM, iso(utcnow()), flag[0]))
        audit.append(conn, audit.SYSTEM, "continuity.superseded", str(flag[0]), {"between": between["id"]})


def rescan(conn: sqlite3.Connection, device_serial: str | None = None) -> int:
    """Walk whole timelines (a catalog from before this check, or after changing its limits);
    returns how many new flags were found."""
    serials = [device_serial] if device_serial else [
        r[0] for r in conn.execute("SELECT DISTINCT device_serial FROM recordings")]
    found = 0
    for serial in serials:
        clips = [r for r in conn.execute(
            f"SELECT {_COLUMNS} FROM recordings WHERE device_serial = ? ORDER BY camera_mtime, id", (serial,))
            if is_clip(r["rel_path"])]
        for a, b in zip(clips, clips[1:]):
            if a["duration_s"] and b["duration_s"]:
                judged = judge(_clip(a), _clip(b))
                if judged and _flag(conn, serial, _clip(a), _clip(b), *judged) is not None:
                    found += 1
    return found


def review(conn: sqlite3.Connection, flag_id: int, explanation: str, *, actor: str) -> None:
    """Explain a flag (battery died, the action ended...): who, when and why are kept."""
    explanation = explanation.strip()
    if not explanation or len(explanation) > 1000:
        raise ContinuityError("explanation: 1 to 1000 characters")
    row = conn.execute("SELECT * FROM continuity_flags WHERE id = ?", (flag_id,)).fetchone()
    if row is None:
        raise ContinuityError(f"no flag {flag_id}")
    if row["state"] != "open":
        raise ContinuityError(f"flag {flag_id} is {row['state']} already")
    conn.execute("UPDATE continuity_flags SET state = 'explained', explanation = ?, reviewed_by = ?,"
                 " reviewed_at = ? WHERE id = ?", (explanation, actor, iso(utcnow()), flag_id))
    audit.append(conn, actor, "continuity.review", str(flag_id),
                 {"device": row["device_serial"], "kind": row["kind"], "seconds": row["seconds"],
                  "explanation": explanation})


def flags(conn: sqlite3.Connection, *, state: str | None = None, device_serial: str | None = None,
          since: str | None = None, until: str | None = None, limit: int = 500) -> list[dict]:
    """Flags with their two clips, newest first."""
    where, args = [], []
    for column, value in (("f.state", state), ("f.device_serial", device_serial)):
        if value:
            where.append(f"{column} = ?")
            args.append(value)
    if since:
        where.append("f.next_start >= ?")
        args.append(since)
    if until:
        where.append("f.next_start < ?")
        args.append(until)
    sql = ("SELECT f.*, a.rel_path AS prev_path, b.rel_path AS next_path, o.name AS officer_name"
           " FROM continuity_flags f JOIN recordings a ON a.id = f.prev_id JOIN recordings b ON b.id = f.next_id"
           " LEFT JOIN officers o ON o.id = b.officer_id"
           + (" WHERE " + " AND ".join(where) if where else "")
           + " ORDER BY f.state = 'open' DESC, f.next_start DESC LIMIT ?")
    return [dict(r) for r in conn.execute(sql, (*args, limit))]
