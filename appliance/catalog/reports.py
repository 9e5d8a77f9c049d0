"""Supervision reports (regulation articles 18 and 19): what the unit head checks daily and
what the legal section inspects, for a period, per officer, per device and for the unit.

:func:`supervision` gathers the facts once; the web page lays them out as a printable
page, a PDF and a CSV (:mod:`appliance.web.views.reports`). Counts only where a list
would show evidence: file names appear only in the continuity section, and the page masks
those the reader is not cleared for.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from appliance.catalog import continuity, deadlines, exceptions, judicial, releases
from appliance.catalog.deadlines import LateDevice
from appliance.timeutil import iso, utcnow

MAX_DAYS = 366
DAILY_LIST_DAYS = 92      # per-day deadline lists are reconstructed for at most this many days


@dataclass
class Report:
    since: date
    until: date                        # inclusive
    generated_at: str
    totals: dict = field(default_factory=dict)
    officers: list[dict] = field(default_factory=list)
    devices: list[dict] = field(default_factory=list)
    overdue_now: list[LateDevice] = field(default_factory=list)
    not_returned_now: list[LateDevice] = field(default_factory=list)
    flags: list[dict] = field(default_factory=list)
    exceptions: list[dict] = field(default_factory=list)
    releases: list[dict] = field(default_factory=list)
    accesses: list[dict] = field(default_factory=list)
    verify_runs: list[dict] = field(default_factory=list)
    purges: list[dict] = field(default_factory=list)
    days_listed: int = 0


def _bounds(since: date, until: date, tz: str) -> tuple[str, str]:
    zone = ZoneInfo(tz)
    return iso(datetime.combine(since, time(0), zone)), iso(datetime.combine(until + timedelta(days=1), time(0), zone))


_UNTAGGED = ("NOT EXISTS (SELECT 1 FROM recording_cases x WHERE x.recording_id = r.id)"
             " AND NOT EXISTS (SELECT 1 FROM recording_categories x WHERE x.recording_id = r.id)"
             " AND NOT EXISTS (SELECT 1 FROM recording_tags x WHERE x.recording_id = r.id)")


def supervision(conn: sqlite3.Connection, since: date, until: date, *, tz: str, end_of_day: time,
                now: datetime | None = None, docked: frozenset[str] = frozenset()) -> Report:
    """The supervision report of the period ``since`` .. ``until`` (local dates, inclusive)."""
    if until < since:
        raise ValueError("the period ends before it begins")
    if (until - since).days >= MAX_DAYS:
        raise ValueError(f"at most {MAX_DAYS} days in one report")
    now = now or utcnow()
    lo, hi = _bounds(since, until, tz)
    report = Report(since, until, iso(now))
    per_officer = conn.execute(
        "SELECT COALESCE(o.name, '') AS officer, COUNT(*) AS recordings, COALESCE(SUM(r.duration_s), 0) / 3600.0"
        f" AS hours, COALESCE(SUM(r.size), 0) AS bytes, SUM(CASE WHEN {_UNTAGGED} THEN 1 ELSE 0 END) AS untagged"
        " FROM recordings r LEFT JOIN officers o ON o.id = r.officer_id"
        " WHERE r.camera_mtime >= ? AND r.camera_mtime < ? GROUP BY o.name ORDER BY o.name", (lo, hi)).fetchall()
    flags_by_officer: dict[str, list[int]] = {}
    flags_by_device: dict[str, list[int]] = {}
    report.flags = continuity.flags(conn, since=lo, until=hi, limit=5000)
    for f in report.flags:
        for bucket, key in ((flags_by_officer, f["officer_name"] or ""), (flags_by_device, f["device_serial"])):
            counts = bucket.setdefault(key, [0, 0])
            counts[0] += 1
            counts[1] += f["state"] == "open"
    report.officers = [{**dict(r), "hours": round(r["hours"], 2), "flags": flags_by_officer.get(r["officer"], [0, 0])[0],
                        "flags_open": flags_by_officer.get(r["officer"], [0, 0])[1]} for r in per_officer]

    days = _days_listed(since, until, now, tz, end_of_day)
    report.days_listed = len(days)
    overdue_days: dict[str, int] = {}
    missing_days: dict[str, int] = {}
    for day in days:
        listed = deadlines.daily_list(conn, day, end_of_day=end_of_day, tz=tz)
        for d in listed.overdue:
            overdue_days[d.serial] = overdue_days.get(d.serial, 0) + 1
        for d in listed.not_returned:
            missing_days[d.serial] = missing_days.get(d.serial, 0) + 1
    for d in conn.execute(
            "SELECT d.*, o.name AS officer_name,"
            " (SELECT COUNT(*) FROM recordings r WHERE r.device_serial = d.serial AND r.camera_mtime >= ?"
            "  AND r.camera_mtime < ?) AS recordings,"
            " (SELECT COALESCE(SUM(r.duration_s), 0) / 3600.0 FROM recordings r WHERE r.device_serial = d.serial"
            "  AND r.camera_mtime >= ? AND r.camera_mtime < ?) AS hours,"
            " (SELECT COUNT(*) FROM dockings k WHERE k.device_id = d.id AND k.at >= ? AND k.at < ?) AS dockings,"
            " (SELECT COUNT(*) FROM dockings k WHERE k.device_id = d.id AND k.at >= ? AND k.at < ?"
            "  AND k.status != 'in_service') AS flagged_dockings"
            " FROM devices d LEFT JOIN officers o ON o.id = d.officer_id ORDER BY d.serial",
            (lo, hi, lo, hi, lo, hi, lo, hi)):
        report.devices.append({
            "serial": d["serial"], "brand": d["brand"], "model": d["model"], "asset_number": d["asset_number"],
            "status": d["status"], "officer": d["officer_name"] or "", "custodian": d["custodian"],
            "recordings": d["recordings"], "hours": round(d["hours"], 2), "dockings": d["dockings"],
            "last_docked_at": d["last_docked_at"], "flagged_dockings": d["flagged_dockings"],
            "days_overdue": overdue_days.get(d["serial"], 0), "days_not_returned": missing_days.get(d["serial"], 0),
            "flags": flags_by_device.get(d["serial"], [0, 0])[0]})
    report.overdue_now = deadlines.overdue_devices(conn, now, docked=docked)
    report.not_returned_now = deadlines.not_returned_devices(conn, now, end_of_day, tz=tz, docked=docked)
    report.exceptions = exceptions.listing(conn, since=lo, until=hi, limit=5000)
    report.releases = releases.listing(conn, since=lo, until=hi, limit=5000)
    report.accesses = judicial.register(conn, since=lo, until=hi)
    report.verify_runs = [dict(r) for r in conn.execute(
        "SELECT id, started_at, finished_at, files_checked, bytes_checked, problems, pool_health FROM verify_runs"
        " WHERE finished_at >= ? AND finished_at < ? ORDER BY id", (lo, hi))]
    report.purges = [dict(r) for r in conn.execute(
        "SELECT p.*, (SELECT COUNT(*) FROM purge_items i WHERE i.list_id = p.id AND i.state = 'purged') AS purged"
        " FROM purge_lists p WHERE p.requested_at >= ? AND p.requested_at < ? ORDER BY p.id", (lo, hi))]
    sessions = conn.execute("SELECT COUNT(*), SUM(quarantined), SUM(state = 'failed'), SUM(device_flag IS NOT NULL)"
                            " FROM sessions WHERE started_at >= ? AND started_at < ?", (lo, hi)).fetchone()
    report.totals = {
        "recordings": sum(o["recordings"] for o in report.officers),
        "hours": round(sum(o["hours"] for o in report.officers), 2),
        "bytes": sum(o["bytes"] for o in report.officers),
        "untagged": sum(o["untagged"] for o in report.officers),
        "sessions": sessions[0] or 0, "quarantined": sessions[1] or 0, "failed_sessions": sessions[2] or 0,
        "flagged_dockings": sessions[3] or 0,
        "devices": len(report.devices), "officers": len([o for o in report.officers if o["officer"]]),
        "flags": len(report.flags), "flags_open": sum(1 for f in report.flags if f["state"] == "open"),
        "exceptions": len(report.exceptions), "releases": len(report.releases),
        "accesses": len(report.accesses), "verify_runs": len(report.verify_runs),
        "verify_failed": sum(1 for v in report.verify_runs if v["problems"]),
        "overdue_now": len(report.overdue_now), "not_returned_now": len(report.not_returned_now),
        "purged": sum(p["purged"] for p in report.purges),
    }
    return report


def _days_listed(since: date, until: date, now: datetime, tz: str, end_of_day: time) -> list[date]:
    """The days of the period whose working day has ended, newest :data:`DAILY_LIST_DAYS`."""
    local_now = now.astimezone(ZoneInfo(tz))
    last = local_now.date() if local_now.time() >= end_of_day else local_now.date() - timedelta(days=1)
    last = min(last, until)
    days = []
    day = last
    while day >= since and len(days) < DAILY_LIST_DAYS:
        days.append(day)
        day -= timedelta(days=1)
    return sorted(days)
