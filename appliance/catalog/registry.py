"""Officers and devices: the device registry (regulation articles 4, 9, 11, 12, 20, 21).

Every camera is a fixed asset (art. 20): serial, asset number, brand, model, purchase
date, and a named custodian who looks after it (art. 9). Its status is one of
:data:`DEVICE_STATUSES` (art. 12: a faulty camera goes to repair). Who holds it is an
assignment with a start and an end (art. 11: "whoever uses it is responsible"), so a
recording is attributed to the officer who held the camera *when it was recorded*
(:func:`officer_at`), not to whoever holds it when it is docked. Maintenance, repairs,
upgrades and checks go into the device's log (art. 21). Every docking of a registered
camera is remembered (the deadlines of art. 13 and 15.1), and a camera that docks while
not in service is flagged on its session and in the audit log (art. 4).

Every change is audited in the same transaction.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import date, datetime

from appliance.catalog import audit
from appliance.errors import ApplianceError
from appliance.timeutil import iso, utcnow

DEVICE_STATUSES = ("in_service", "in_repair", "lost", "retired")
#: what the device log records besides status changes
WORK_KINDS = ("check", "maintenance", "repair", "upgrade", "accessories", "training", "other")


class RegistryError(ApplianceError):
    """设备登记错误 / device registry error: {}"""


@dataclass(frozen=True)
class Device:
    """A registered camera and the officer it is assigned to."""

    id: int
    serial: str
    brand: str
    model: str
    status: str
    officer_id: int | None
    officer_name: str | None
    asset_number: str = ""
    purchase_date: str | None = None
    custodian: str = ""
    notes: str = ""
    created_at: str = ""
    last_docked_at: str | None = None
    status_changed_at: str | None = None


_SELECT = ("SELECT d.*, o.name AS officer_name FROM devices d"
           " LEFT JOIN officers o ON o.id = d.officer_id")


def _device(r: sqlite3.Row) -> Device:
    return Device(r["id"], r["serial"], r["brand"], r["model"], r["status"], r["officer_id"],
                  r["officer_name"], r["asset_number"], r["purchase_date"], r["custodian"], r["notes"],
                  r["created_at"], r["last_docked_at"], r["status_changed_at"])


def ensure_officer(conn: sqlite3.Connection, name: str, actor: str = audit.SYSTEM) -> int:
    """The officer's id, creating the officer on first mention."""
    row = conn.execute("SELECT id FROM officers WHERE name = ?", (name,)).fetchone()
    if row:
        return row["id"]
    cur = conn.execute("INSERT INTO officers (name, created_at) VALUES (?, ?)", (name, iso(utcnow())))
    audit.append(conn, actor, "officer.add", name)
    return int(cur.lastrowid)


def _text(value: object, what: str, limit: int) -> str:
    """A form field: stripped, at most ``limit`` characters; short fields are one line."""
    text = str(value or "").strip()
    one_line = limit <= 64
    if len(text) > limit or "\x00" in text or (one_line and ("\n" in text or "\r" in text)):
        raise RegistryError(f"{what}: at most {limit} characters" + (" on one line" if one_line else ""))
    return text


def _day(value: object, what: str) -> str | None:
    text = str(value or "").strip()
    if not text:
        return None
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise RegistryError(f"{what}: a date like 2026-03-01") from None


def add_device(conn: sqlite3.Connection, serial: str, *, officer: str | None, model: str = "",
               brand: str = "", actor: str = audit.SYSTEM, asset_number: str = "",
               purchase_date: str | None = None, custodian: str = "", notes: str = "") -> Device:
    """Register a camera, or update an existing one and (re)assign it; audited either way."""
    serial = serial.strip()
    if not serial or len(serial) > 64 or any(ord(c) < 32 for c in serial):
        raise RegistryError(f"{serial!r}: a serial is 1 to 64 characters on one line, as the camera reports it")
    existing = get_device(conn, serial)
    if existing:
        update_details(conn, existing.id, actor=actor, model=model or existing.model,
                       brand=brand or existing.brand,
                       asset_number=asset_number or existing.asset_number,
                       purchase_date=purchase_date or existing.purchase_date,
                       custodian=custodian or existing.custodian, notes=notes or existing.notes)
        if officer != existing.officer_name:
            assign(conn, existing.id, officer, actor=actor)
    else:
        asset_number = _asset(conn, asset_number, None)
        now = iso(utcnow())
        device_id = int(conn.execute(
            "INSERT INTO devices (serial, brand, model, created_at, asset_number, purchase_date, custodian,"
            " notes, status_changed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (serial, _text(brand, "brand", 64), _text(model, "model", 64), now, asset_number,
             _day(purchase_date, "purchase date"), _text(custodian, "custodian", 64),
             _text(notes, "notes", 2000), now)).lastrowid)
        audit.append(conn, actor, "device.add", serial,
                     {"officer": officer, "model": model, "brand": brand, "asset_number": asset_number,
                      "custodian": custodian})
        if officer:
            assign(conn, device_id, officer, actor=actor, at=now)
    device = get_device(conn, serial)
    assert device is not None
    return device


def _asset(conn: sqlite3.Connection, asset_number: str, device_id: int | None) -> str:
    asset_number = _text(asset_number, "asset number", 64)
    if asset_number:
        clash = conn.execute("SELECT serial FROM devices WHERE asset_number = ? AND id IS NOT ?",
                             (asset_number, device_id)).fetchone()
        if clash:
            raise RegistryError(f"asset number {asset_number} belongs to {clash[0]} already")
    return asset_number


def update_details(conn: sqlite3.Connection, device_id: int, *, actor: str, brand: str, model: str,
                   asset_number: str, purchase_date: str | None, custodian: str, notes: str) -> Device:
    """Change the fixed-asset facts of a device (not its status or officer: those have their own
    functions and histories). Audited with what changed."""
    device = _require(conn, device_id)
    new = {"brand": _text(brand, "brand", 64), "model": _text(model, "model", 64),
           "asset_number": _asset(conn, asset_number, device_id),
           "purchase_date": _day(purchase_date, "purchase date"),
           "custodian": _text(custodian, "custodian", 64), "notes": _text(notes, "notes", 2000)}
    changed = {k: v for k, v in new.items() if getattr(device, k) != v}
    if not changed:
        return device
    sets = ", ".join(f"{k} = ?" for k in changed)
    conn.execute(f"UPDATE devices SET {sets} WHERE id = ?", (*changed.values(), device_id))
    audit.append(conn, actor, "device.update", device.serial,
                 {k: {"from": getattr(device, k), "to": v} for k, v in changed.items()})
    return _require(conn, device_id)


def assign(conn: sqlite3.Connection, device_id: int, officer: str | None, *, actor: str,
           reason: str = "", at: str | None = None) -> None:
    """Hand the camera to ``officer`` (None: back to the cabinet) from now on (art. 11)."""
    device = _require(conn, device_id)
    officer = (officer or "").strip() or None
    if officer is not None and len(officer) > 64:
        raise RegistryError("officer: at most 64 characters")
    now = at or iso(utcnow())
    officer_id = ensure_officer(conn, officer, actor) if officer else None
    current = conn.execute("SELECT * FROM device_assignments WHERE device_id = ? AND until IS NULL"
                           " ORDER BY since DESC LIMIT 1", (device_id,)).fetchone()
    if current is not None and current["officer_id"] == officer_id:
        return
    if current is not None:
        conn.execute("UPDATE device_assignments SET until = ? WHERE id = ?", (now, current["id"]))
    conn.execute("INSERT INTO device_assignments (device_id, officer_id, since, assigned_by, reason)"
                 " VALUES (?, ?, ?, ?, ?)", (device_id, officer_id, now, actor, _text(reason, "reason", 500)))
    conn.execute("UPDATE devices SET officer_id = ? WHERE id = ?", (officer_id, device_id))
    audit.append(conn, actor, "device.assign", device.serial,
                 {"officer": officer, "previous_officer": device.officer_name, "reason": reason})


def set_status(conn: sqlite3.Connection, device_id: int, status: str, *, actor: str, reason: str) -> None:
    """Put a device in service, in repair, lost or retired (art. 12), with the reason, logged."""
    if status not in DEVICE_STATUSES:
        raise RegistryError(f"{status!r}: unknown status (one of {', '.join(DEVICE_STATUSES)})")
    reason = _text(reason, "reason", 1000)
    if not reason:
        raise RegistryError("reason: required for a status change")
    device = _require(conn, device_id)
    if device.status == status:
        raise RegistryError(f"{device.serial} is {status} already")
    now = iso(utcnow())
    conn.execute("UPDATE devices SET status = ?, status_changed_at = ? WHERE id = ?", (status, now, device_id))
    conn.execute("INSERT INTO device_log (device_id, at, day, kind, status_from, status_to, text, actor)"
                 " VALUES (?, ?, NULL, 'status', ?, ?, ?, ?)", (device_id, now, device.status, status, reason, actor))
    audit.append(conn, actor, "device.status", device.serial,
                 {"from": device.status, "to": status, "reason": reason})


def log_work(conn: sqlite3.Connection, device_id: int, kind: str, *, day: str | None, text: str,
             performed_by: str, actor: str) -> None:
    """A maintenance, repair, upgrade, check... entry in the device's log (art. 20, 21)."""
    if kind not in WORK_KINDS:
        raise RegistryError(f"{kind!r}: unknown kind of work (one of {', '.join(WORK_KINDS)})")
    text = _text(text, "description", 2000)
    if not text:
        raise RegistryError("description: required")
    device = _require(conn, device_id)
    work_day = _day(day, "date")
    conn.execute("INSERT INTO device_log (device_id, at, day, kind, text, performed_by, actor)"
                 " VALUES (?, ?, ?, ?, ?, ?, ?)",
                 (device_id, iso(utcnow()), work_day, kind, text, _text(performed_by, "performed by", 64), actor))
    audit.append(conn, actor, f"device.{kind}", device.serial,
                 {"day": work_day, "text": text, "performed_by": performed_by})


def get_device(conn: sqlite3.Connection, serial: str) -> Device | None:
    """The registered device with this serial, or None for an unknown camera."""
    row = conn.execute(_SELECT + " WHERE d.serial = ?", (serial,)).fetchone()
    return _device(row) if row else None


def get_device_by_id(conn: sqlite3.Connection, device_id: int) -> Device | None:
    row = conn.execute(_SELECT + " WHERE d.id = ?", (device_id,)).fetchone()
    return _device(row) if row else None


def _require(conn: sqlite3.Connection, device_id: int) -> Device:
    device = get_device_by_id(conn, device_id)
    if device is None:
        raise RegistryError(f"no device {device_id}")
    return device


def list_devices(conn: sqlite3.Connection) -> list[Device]:
    """Every registered device, by serial."""
    return [_device(r) for r in conn.execute(_SELECT + " ORDER BY d.serial")]


def assignments(conn: sqlite3.Connection, device_id: int) -> list[dict]:
    """The device's assignment history, newest first."""
    return [dict(r) for r in conn.execute(
        "SELECT a.*, o.name AS officer_name FROM device_assignments a"
        " LEFT JOIN officers o ON o.id = a.officer_id WHERE a.device_id = ? ORDER BY a.since DESC, a.id DESC",
        (device_id,))]


def device_log(conn: sqlite3.Connection, device_id: int) -> list[dict]:
    """Status changes and work on the device, newest first."""
    return [dict(r) for r in conn.execute(
        "SELECT * FROM device_log WHERE device_id = ? ORDER BY at DESC, id DESC", (device_id,))]


def dockings(conn: sqlite3.Connection, device_id: int, limit: int = 50) -> list[dict]:
    """The device's newest dockings with their sessions' outcome."""
    return [dict(r) for r in conn.execute(
        "SELECT k.*, s.state AS session_state, s.files_total, s.device_flag FROM dockings k"
        " LEFT JOIN sessions s ON s.id = k.session_id WHERE k.device_id = ? ORDER BY k.at DESC LIMIT ?",
        (device_id, limit))]


def officer_at(conn: sqlite3.Connection, device_serial: str, at: str) -> tuple[bool, int | None]:
    """Who held the camera at ``at`` (ISO): ``(known, officer_id)``.

    ``known`` is False when the registry has no assignment history for the camera (the
    caller then keeps what it had). A time before the first assignment belongs to the
    first holder: the camera was issued to them, the clock or the registration was late.
    """
    rows = conn.execute(
        "SELECT a.officer_id, a.since FROM device_assignments a JOIN devices d ON d.id = a.device_id"
        " WHERE d.serial = ? AND a.since <= ? ORDER BY a.since DESC, a.id DESC LIMIT 1",
        (device_serial, at)).fetchone()
    if rows is not None:
        return True, rows[0]
    first = conn.execute(
        "SELECT a.officer_id FROM device_assignments a JOIN devices d ON d.id = a.device_id"
        " WHERE d.serial = ? ORDER BY a.since, a.id LIMIT 1", (device_serial,)).fetchone()
    return (True, first[0]) if first is not None else (False, None)


def mark_docked(conn: sqlite3.Connection, serial: str, session_id: str | None = None) -> str | None:
    """Remember a docking (art. 13's two-day rule, art. 15.1's end of day).

    A camera that is not in service (in repair, lost, retired) and docks anyway is
    flagged: the session row carries ``device_flag`` and the audit log says so (art. 4).
    Its recordings are ingested as always: evidence is never turned away. Returns the flag.
    """
    device = get_device(conn, serial)
    if device is None:
        return None
    now = iso(utcnow())
    conn.execute("UPDATE devices SET last_docked_at = ? WHERE serial = ?", (now, serial))
    if session_id is not None and not conn.execute("SELECT 1 FROM sessions WHERE id = ?", (session_id,)).fetchone():
        session_id = None
    conn.execute("INSERT INTO dockings (device_id, session_id, at, status) VALUES (?, ?, ?, ?)",
                 (device.id, session_id, now, device.status))
    if device.status == "in_service":
        return None
    flag = f"device_{device.status}"
    if session_id is not None:
        conn.execute("UPDATE sessions SET device_flag = ? WHERE id = ?", (flag, session_id))
    audit.append(conn, audit.SYSTEM, "device.docked-not-in-service", serial,
                 {"status": device.status, "session": session_id})
    return flag


def status_at(conn: sqlite3.Connection, device_id: int, at: str) -> str:
    """The device's status at ``at`` (ISO), from its status history."""
    row = conn.execute("SELECT status_to FROM device_log WHERE device_id = ? AND kind = 'status' AND at <= ?"
                       " ORDER BY at DESC, id DESC LIMIT 1", (device_id, at)).fetchone()
    if row is not None:
        return row[0]
    first = conn.execute("SELECT status_from FROM device_log WHERE device_id = ? AND kind = 'status'"
                         " ORDER BY at, id LIMIT 1", (device_id,)).fetchone()
    if first is not None:
        return first[0]
    return conn.execute("SELECT status FROM devices WHERE id = ?", (device_id,)).fetchone()[0]


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None
