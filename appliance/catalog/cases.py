"""Cases, the long-term categories of article 7, and free tags on recordings.

A recording tagged to a case whose category is long-term gets that category too: it is
then kept long-term and can never be purged. Tags are metadata about recordings; the
recordings themselves never change. Every tagging is audited in the same transaction.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from appliance.catalog import audit
from appliance.errors import ApplianceError
from appliance.timeutil import iso, utcnow

CASE_STATUSES = ("open", "closed")
_NUMBER = re.compile(r"^[\w\-()（）〔〕\[\]第号/.]{1,64}$")


class CaseError(ApplianceError):
    """案件错误 / case error: {}"""


@dataclass(frozen=True)
class Category:
    key: str
    name_zh: str
    name_en: str
    long_term: bool


@dataclass(frozen=True)
class Case:
    id: int
    number: str
    title: str
    category: str | None
    status: str
    notes: str
    created_at: str
    created_by: str
    recordings: int = 0


def categories(conn: sqlite3.Connection) -> list[Category]:
    return [Category(r["key"], r["name_zh"], r["name_en"], bool(r["long_term"]))
            for r in conn.execute("SELECT * FROM categories ORDER BY ordinal")]


def _check_category(conn: sqlite3.Connection, key: str | None) -> str | None:
    if not key:
        return None
    if not conn.execute("SELECT 1 FROM categories WHERE key = ?", (key,)).fetchone():
        raise CaseError(f"{key!r}: unknown category")
    return key


def create_case(conn: sqlite3.Connection, number: str, title: str, *, category: str | None,
                actor: str, notes: str = "") -> Case:
    number, title = number.strip(), title.strip()
    if not _NUMBER.fullmatch(number):
        raise CaseError("case number: 1 to 64 letters, digits and -()〔〕[]第号/.")
    if not title or len(title) > 200:
        raise CaseError("case title: 1 to 200 characters")
    if conn.execute("SELECT 1 FROM cases WHERE number = ?", (number,)).fetchone():
        raise CaseError(f"{number}: a case with this number exists already")
    category = _check_category(conn, category)
    cur = conn.execute(
        "INSERT INTO cases (number, title, category, notes, created_at, created_by)"
        " VALUES (?, ?, ?, ?, ?, ?)", (number, title, category, notes.strip()[:2000], iso(utcnow()), actor))
    audit.append(conn, actor, "case.create", number, {"title": title, "category": category})
    return get_case(conn, int(cur.lastrowid))  # type: ignore[return-value]


def get_case(conn: sqlite3.Connection, case_id: int) -> Case | None:
    r = conn.execute("SELECT c.*, (SELECT COUNT(*) FROM recording_cases x WHERE x.case_id = c.id)"
                     " AS n FROM cases c WHERE c.id = ?", (case_id,)).fetchone()
    return _case(r) if r else None


def _case(r: sqlite3.Row) -> Case:
    return Case(r["id"], r["number"], r["title"], r["category"], r["status"], r["notes"],
                r["created_at"], r["created_by"], r["n"])


def list_cases(conn: sqlite3.Connection, *, status: str | None = None, limit: int = 500) -> list[Case]:
    sql = ("SELECT c.*, (SELECT COUNT(*) FROM recording_cases x WHERE x.case_id = c.id) AS n"
           " FROM cases c")
    args: tuple = ()
    if status:
        sql += " WHERE c.status = ?"
        args = (status,)
    return [_case(r) for r in conn.execute(sql + " ORDER BY c.id DESC LIMIT ?", (*args, limit))]


def set_case_status(conn: sqlite3.Connection, case_id: int, status: str, *, actor: str) -> None:
    if status not in CASE_STATUSES:
        raise CaseError(f"{status!r}: unknown case status")
    case = get_case(conn, case_id)
    if case is None:
        raise CaseError(f"no case {case_id}")
    conn.execute("UPDATE cases SET status = ? WHERE id = ?", (status, case_id))
    audit.append(conn, actor, f"case.{'close' if status == 'closed' else 'reopen'}", case.number)


def tag_names(conn: sqlite3.Connection) -> list[tuple[int, str]]:
    return [(r[0], r[1]) for r in conn.execute("SELECT id, name FROM tags ORDER BY name")]


def _tag_id(conn: sqlite3.Connection, name: str) -> int:
    name = name.strip()
    if not name or len(name) > 40 or any(c in name for c in "\r\n\t"):
        raise CaseError("a tag is 1 to 40 characters on one line")
    row = conn.execute("SELECT id FROM tags WHERE name = ?", (name,)).fetchone()
    if row:
        return row[0]
    return int(conn.execute("INSERT INTO tags (name) VALUES (?)", (name,)).lastrowid)


def _recording_times(conn: sqlite3.Connection, recording_ids: Iterable[int]) -> dict[int, str]:
    ids = sorted({int(i) for i in recording_ids})
    if not ids:
        raise CaseError("no recordings chosen")
    if len(ids) > 5000:
        raise CaseError("at most 5000 recordings at a time")
    marks = ",".join("?" * len(ids))
    rows = conn.execute(f"SELECT id, camera_mtime, purged_at FROM recordings WHERE id IN ({marks})", ids).fetchall()
    found = {r[0]: r[1] for r in rows}
    missing = [i for i in ids if i not in found]
    if missing:
        raise CaseError(f"no recording {missing[0]}")
    purged = [r[0] for r in rows if r[2]]
    if purged:
        raise CaseError(f"recording {purged[0]} was purged under the retention rules")
    return found


def tag_recordings(conn: sqlite3.Connection, recording_ids: Iterable[int], *, actor: str,
                   case_id: int | None = None, category: str | None = None,
                   tag: str | None = None) -> int:
    """Tag recordings to a case, a category and/or a free tag; returns how many links were new."""
    times = _recording_times(conn, recording_ids)
    now = iso(utcnow())
    added = 0
    case = None
    if case_id is not None:
        case = get_case(conn, case_id)
        if case is None:
            raise CaseError(f"no case {case_id}")
        if case.status != "open":
            raise CaseError(f"{case.number}: the case is closed")
    categories_wanted = [c for c in {_check_category(conn, category), case.category if case else None} if c]
    tag_id = _tag_id(conn, tag) if tag else None
    if case is None and not categories_wanted and tag_id is None:
        raise CaseError("choose a case, a category or a tag")
    for rid, at in times.items():
        if case is not None:
            added += conn.execute("INSERT OR IGNORE INTO recording_cases (case_id, recording_id, at,"
                                  " tagged_at, tagged_by) VALUES (?, ?, ?, ?, ?)",
                                  (case.id, rid, at, now, actor)).rowcount
        for key in categories_wanted:
            added += conn.execute("INSERT OR IGNORE INTO recording_categories (category, recording_id,"
                                  " at, tagged_at, tagged_by) VALUES (?, ?, ?, ?, ?)",
                                  (key, rid, at, now, actor)).rowcount
        if tag_id is not None:
            added += conn.execute("INSERT OR IGNORE INTO recording_tags (tag_id, recording_id, at,"
                                  " tagged_at, tagged_by) VALUES (?, ?, ?, ?, ?)",
                                  (tag_id, rid, at, now, actor)).rowcount
    audit.append(conn, actor, "recording.tag", case.number if case else "",
                 {"recordings": sorted(times)[:200], "count": len(times),
                  "categories": categories_wanted, "tag": tag.strip() if tag else None})
    return added


def untag_case(conn: sqlite3.Connection, case_id: int, recording_id: int, *, actor: str) -> None:
    """Take a recording off a case. Its long-term category stays: article 7 keeps it."""
    case = get_case(conn, case_id)
    if case is None:
        raise CaseError(f"no case {case_id}")
    if not conn.execute("DELETE FROM recording_cases WHERE case_id = ? AND recording_id = ?",
                        (case_id, recording_id)).rowcount:
        raise CaseError(f"recording {recording_id} is not on case {case.number}")
    audit.append(conn, actor, "recording.untag", case.number, {"recording": recording_id})


def labels(conn: sqlite3.Connection, recording_ids: list[int]) -> dict[int, dict[str, list]]:
    """Cases, categories and tags of each recording (for a page of results)."""
    out: dict[int, dict[str, list]] = {i: {"cases": [], "categories": [], "tags": []} for i in recording_ids}
    if not recording_ids:
        return out
    marks = ",".join("?" * len(recording_ids))
    for r in conn.execute(f"SELECT x.recording_id, c.id, c.number, c.title FROM recording_cases x"
                          f" JOIN cases c ON c.id = x.case_id WHERE x.recording_id IN ({marks})"
                          f" ORDER BY c.number", recording_ids):
        out[r[0]]["cases"].append({"id": r[1], "number": r[2], "title": r[3]})
    for r in conn.execute(f"SELECT x.recording_id, k.key, k.name_zh, k.name_en FROM recording_categories x"
                          f" JOIN categories k ON k.key = x.category WHERE x.recording_id IN ({marks})"
                          f" ORDER BY k.ordinal", recording_ids):
        out[r[0]]["categories"].append({"key": r[1], "zh": r[2], "en": r[3]})
    for r in conn.execute(f"SELECT x.recording_id, t.id, t.name FROM recording_tags x"
                          f" JOIN tags t ON t.id = x.tag_id WHERE x.recording_id IN ({marks})"
                          f" ORDER BY t.name", recording_ids):
        out[r[0]]["tags"].append({"id": r[1], "name": r[2]})
    return out
