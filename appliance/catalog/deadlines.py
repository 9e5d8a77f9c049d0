"""Deadlines of articles 13 and 15.1: overdue and not-returned devices.

* **Overdue** (art. 13: recordings onto the unit's storage within 2 days): a device in
  service, not in a slot now, last docked (or, never docked, registered) more than two
  days ago.
* **Not returned** (art. 15.1: collected at the end of each working day): a device in
  service, not in a slot now, not docked on the newest working day that has ended (the
  end of the working day is a local time of the station).

:func:`overdue_devices` and :func:`not_returned_devices` answer for *now* (the page and
the metrics: ``appliance.monitoring`` counts the same devices). :func:`daily_list` answers
for a past day, as it stood at that day's end of work, from the dockings and the status
history; :func:`store_daily_list` keeps the list made at the end of each working day (with
the slots as they were then), which :func:`daily_list` prefers when it exists.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from appliance.catalog import audit
from appliance.catalog.registry import status_at
from appliance.timeutil import iso, utcnow

OVERDUE_AFTER = timedelta(days=2)
DEFAULT_TZ = "Asia/Shanghai"
DEFAULT_END_OF_DAY = time(18, 0)


@dataclass(frozen=True)
class LateDevice:
    """One device on a list: who holds it, who looks after it, when it was last seen."""

    id: int
    serial: str
    brand: str
    model: str
    asset_number: str
    custodian: str
    officer_name: str | None
    last_docked_at: str | None
    seen_at: str            # the last docking, or the registration if never docked
    hours: float            # since seen_at, at the list's moment


@dataclass
class DailyList:
    day: date
    at: datetime                         # the moment the list describes (that day's end of work)
    overdue: list[LateDevice] = field(default_factory=list)
    not_returned: list[LateDevice] = field(default_factory=list)
    stored: bool = False                 # kept at the end of that day (else reconstructed)
    generated_at: str | None = None


def _parse(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def _aware(now: datetime) -> datetime:
    return now if now.tzinfo else now.replace(tzinfo=timezone.utc)


def working_day_start(now: datetime, tz: str, end_of_day: time) -> datetime:
    """Local midnight of the newest working day that has ended (its end of day <= now)."""
    local_now = _aware(now).astimezone(ZoneInfo(tz))
    day = local_now.date()
    if local_now.time() < end_of_day:
        day -= timedelta(days=1)
    return datetime.combine(day, time(0, 0), ZoneInfo(tz))


_DEVICES = ("SELECT d.id, d.serial, d.brand, d.model, d.asset_number, d.custodian, d.status, d.created_at,"
            " d.last_docked_at, o.name AS officer_name FROM devices d LEFT JOIN officers o ON o.id = d.officer_id")


def _late(r: sqlite3.Row, seen: datetime, at: datetime, last_docked: str | None) -> LateDevice:
    return LateDevice(r["id"], r["serial"], r["brand"], r["model"], r["asset_number"], r["custodian"],
                      r["officer_name"], last_docked, iso(seen), round((at - seen).total_seconds() / 3600, 1))


def overdue_devices(conn: sqlite3.Connection, now: datetime, *, docked: Collection[str] = ()) -> list[LateDevice]:
    """Devices in service, not in a slot (``docked``: serials in a slot now), last seen more
    than two days before ``now`` (art. 13). Longest overdue first."""
    now = _aware(now)
    out = []
    for r in conn.execute(_DEVICES + " WHERE d.status = 'in_service' ORDER BY d.serial"):
        seen = _parse(r["last_docked_at"]) or _parse(r["created_at"])
        if r["serial"] in docked or seen is None or seen > now:
            continue
        if now - seen > OVERDUE_AFTER:
            out.append(_late(r, seen, now, r["last_docked_at"]))
    return sorted(out, key=lambda d: d.seen_at)


def not_returned_devices(conn: sqlite3.Connection, now: datetime, end_of_day: time = DEFAULT_END_OF_DAY, *,
                         tz: str = DEFAULT_TZ, docked: Collection[str] = ()) -> list[LateDevice]:
    """Devices in service, not in a slot, not docked on the newest working day that has ended
    (art. 15.1): before today's end of work that is yesterday, after it today."""
    now = _aware(now)
    day_start = working_day_start(now, tz, end_of_day)
    out = []
    for r in conn.execute(_DEVICES + " WHERE d.status = 'in_service' ORDER BY d.serial"):
        seen = _parse(r["last_docked_at"]) or _parse(r["created_at"])
        if r["serial"] in docked or seen is None:
            continue
        if seen < day_start:
            out.append(_late(r, seen, now, r["last_docked_at"]))
    return sorted(out, key=lambda d: d.seen_at)


def end_of(day: date, end_of_day: time, tz: str) -> datetime:
    return datetime.combine(day, end_of_day, ZoneInfo(tz))


def reconstruct(conn: sqlite3.Connection, day: date, *, end_of_day: time = DEFAULT_END_OF_DAY,
                tz: str = DEFAULT_TZ, docked: Collection[str] = ()) -> DailyList:
    """The list of ``day`` as it stood at that day's end of work, from the dockings and the
    status history (a camera that stayed in its slot all day cannot be told from one that
    was never brought back: only a list kept on the day knows the slots)."""
    at = end_of(day, end_of_day, tz)
    at_iso = iso(at)
    day_start = iso(datetime.combine(day, time(0, 0), ZoneInfo(tz)))
    result = DailyList(day, at)
    for r in conn.execute(_DEVICES + " WHERE d.created_at <= ? ORDER BY d.serial", (at_iso,)):
        if r["serial"] in docked or status_at(conn, r["id"], at_iso) != "in_service":
            continue
        last = conn.execute("SELECT MAX(at) FROM dockings WHERE device_id = ? AND at <= ?",
                            (r["id"], at_iso)).fetchone()[0]
        seen = _parse(last) or _parse(r["created_at"])
        if seen is None:
            continue
        if at - seen > OVERDUE_AFTER:
            result.overdue.append(_late(r, seen, at, last))
        if iso(seen) < day_start:
            result.not_returned.append(_late(r, seen, at, last))
    result.overdue.sort(key=lambda d: d.seen_at)
    result.not_returned.sort(key=lambda d: d.seen_at)
    return result


def daily_list(conn: sqlite3.Connection, day: date, *, end_of_day: time = DEFAULT_END_OF_DAY,
               tz: str = DEFAULT_TZ) -> DailyList:
    """The list kept at the end of ``day``, else one reconstructed from the history."""
    row = conn.execute("SELECT * FROM deadline_lists WHERE day = ?", (day.isoformat(),)).fetchone()
    if row is None:
        return reconstruct(conn, day, end_of_day=end_of_day, tz=tz)
    result = DailyList(day, end_of(day, end_of_day, tz), stored=True, generated_at=row["generated_at"])
    result.overdue = [LateDevice(**d) for d in json.loads(row["overdue"])]
    result.not_returned = [LateDevice(**d) for d in json.loads(row["not_returned"])]
    return result


def store_daily_list(conn: sqlite3.Connection, day: date, *, end_of_day: time = DEFAULT_END_OF_DAY,
                     tz: str = DEFAULT_TZ, docked: Collection[str] = ()) -> DailyList | None:
    """Keep the list of ``day`` (at its end of work, with the slots as they are now); once."""
    if conn.execute("SELECT 1 FROM deadline_lists WHERE day = ?", (day.isoformat(),)).fetchone():
        return None
    result = reconstruct(conn, day, end_of_day=end_of_day, tz=tz, docked=docked)
    conn.execute("INSERT INTO deadline_lists (day, generated_at, overdue, not_returned) VALUES (?, ?, ?, ?)",
                 (day.isoformat(), iso(utcnow()), json.dumps([asdict(d) for d in result.overdue], ensure_ascii=False),
                  json.dumps([asdict(d) for d in result.not_returned], ensure_ascii=False)))
    audit.append(conn, audit.SYSTEM, "deadlines.daily", day.isoformat(),
                 {"overdue": [d.serial for d in result.overdue],
                  "not_returned": [d.serial for d in result.not_returned]})
    result.stored = True
    return result
