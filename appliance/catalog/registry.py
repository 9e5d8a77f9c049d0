"""Officers and devices: who holds which camera (regulation articles 4, 9, 11)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from appliance.catalog import audit
from appliance.timeutil import iso, utcnow

DEVICE_STATUSES = ("in_service", "in_repair", "lost", "retired")


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


def ensure_officer(conn: sqlite3.Connection, name: str, actor: str = audit.SYSTEM) -> int:
    """The officer's id, creating the officer on first mention."""
    row = conn.execute("SELECT id FROM officers WHERE name = ?", (name,)).fetchone()
    if row:
        return row["id"]
    cur = conn.execute("INSERT INTO officers (name, created_at) VALUES (?, ?)", (name, iso(utcnow())))
    audit.append(conn, actor, "officer.add", name)
    return int(cur.lastrowid)


def add_device(conn: sqlite3.Connection, serial: str, *, officer: str | None, model: str = "",
               brand: str = "", actor: str = audit.SYSTEM) -> Device:
    """Register a camera, or update its assignment; either way it is audited."""
    officer_id = ensure_officer(conn, officer, actor) if officer else None
    existing = get_device(conn, serial)
    if existing:
        conn.execute("UPDATE devices SET officer_id = ?, model = ?, brand = ? WHERE serial = ?",
                     (officer_id, model or existing.model, brand or existing.brand, serial))
        audit.append(conn, actor, "device.update", serial,
                     {"officer": officer, "model": model, "brand": brand,
                      "previous_officer": existing.officer_name})
    else:
        conn.execute(
            "INSERT INTO devices (serial, brand, model, officer_id, created_at) VALUES (?, ?, ?, ?, ?)",
            (serial, brand, model, officer_id, iso(utcnow())))
        audit.append(conn, actor, "device.add", serial,
                     {"officer": officer, "model": model, "brand": brand})
    device = get_device(conn, serial)
    assert device is not None
    return device


def get_device(conn: sqlite3.Connection, serial: str) -> Device | None:
    """The registered device with this serial, or None for an unknown camera."""
    row = conn.execute(
        "SELECT d.*, o.name AS officer_name FROM devices d LEFT JOIN officers o ON o.id = d.officer_id"
        " WHERE d.serial = ?", (serial,)).fetchone()
    if row is None:
        return None
    return Device(row["id"], row["serial"], row["brand"], row["model"], row["status"],
                  row["officer_id"], row["officer_name"])


def list_devices(conn: sqlite3.Connection) -> list[Device]:
    """Every registered device, by serial."""
    rows = conn.execute(
        "SELECT d.*, o.name AS officer_name FROM devices d LEFT JOIN officers o ON o.id = d.officer_id"
        " ORDER BY d.serial").fetchall()
    return [Device(r["id"], r["serial"], r["brand"], r["model"], r["status"], r["officer_id"],
                   r["officer_name"]) for r in rows]


def mark_docked(conn: sqlite3.Connection, serial: str) -> None:
    """Remember when a device was last docked (article 13's two-day rule)."""
    conn.execute("UPDATE devices SET last_docked_at = ? WHERE serial = ?", (iso(utcnow()), serial))
