"""Deadlines of art. 13 (docked within 2 days) and art. 15.1 (returned by the end of the working
day): the functions the metrics call, and the daily list, reconstructed and kept."""

from __future__ import annotations

from datetime import date, datetime, time
from zoneinfo import ZoneInfo

import pytest

from appliance.catalog import deadlines, registry
from appliance.catalog.db import Catalog
from appliance.monitoring import device_counts
from appliance.timeutil import iso

TZ = "Asia/Shanghai"
EOD = time(18, 0)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(TZ))


@pytest.fixture
def catalog(tmp_path):
    c = Catalog(tmp_path / "catalog.sqlite")
    yield c
    c.close()


def add(catalog, serial, *, docked=(), created, status="in_service"):
    """A device registered at ``created`` and docked at each of ``docked``."""
    device = catalog.run(registry.add_device, serial, officer="张伟", custodian="王管理")

    def work(conn):
        conn.execute("UPDATE devices SET created_at = ?, status = ?, last_docked_at = ? WHERE id = ?",
                     (iso(created), status, iso(max(docked)) if docked else None, device.id))
        for moment in docked:
            conn.execute("INSERT INTO dockings (device_id, at, status) VALUES (?, ?, 'in_service')",
                         (device.id, iso(moment)))
    catalog.run(work)
    return device


def serials(items):
    return sorted(d.serial for d in items)


def test_overdue_and_not_returned_now_agree_with_the_metrics(catalog):
    long_ago = at("2026-10-01 09:00")
    add(catalog, "FRESH", docked=[at("2026-11-27 17:40")], created=long_ago)
    add(catalog, "YESTERDAY", docked=[at("2026-11-26 17:00")], created=long_ago)
    add(catalog, "OLD", docked=[at("2026-11-24 17:00")], created=long_ago)
    add(catalog, "NEVER", created=long_ago)
    add(catalog, "NEW", created=at("2026-11-27 18:30"))
    add(catalog, "DOCKED", docked=[at("2026-11-20 08:00")], created=long_ago)
    add(catalog, "REPAIR", docked=[at("2026-10-02 08:00")], created=long_ago, status="in_repair")
    for now in (at("2026-11-27 19:00"), at("2026-11-27 12:00")):
        overdue = catalog.run(deadlines.overdue_devices, now, docked={"DOCKED"})
        missing = catalog.run(deadlines.not_returned_devices, now, EOD, tz=TZ, docked={"DOCKED"})
        counts = catalog.run(device_counts, now, TZ, EOD, {"DOCKED"})
        assert (len(overdue), len(missing)) == (counts.overdue, counts.not_returned)
    now = at("2026-11-27 19:00")
    assert serials(catalog.run(deadlines.overdue_devices, now, docked={"DOCKED"})) == ["NEVER", "OLD"]
    assert serials(catalog.run(deadlines.not_returned_devices, now, EOD, tz=TZ, docked={"DOCKED"})) == [
        "NEVER", "OLD", "YESTERDAY"]
    old = next(d for d in catalog.run(deadlines.overdue_devices, now) if d.serial == "OLD")
    assert old.hours == 74.0 and old.custodian == "王管理" and old.officer_name == "张伟"


def test_the_daily_list_of_a_past_day_is_reconstructed_from_dockings_and_status_history(catalog):
    long_ago = at("2026-10-01 09:00")
    add(catalog, "A", docked=[at("2026-11-20 17:30"), at("2026-11-23 17:10")], created=long_ago)
    add(catalog, "B", docked=[at("2026-11-22 09:00")], created=long_ago)
    repaired = add(catalog, "C", docked=[at("2026-11-01 09:00")], created=long_ago)
    add(catalog, "LATE", docked=[at("2026-11-23 20:00")], created=long_ago)
    add(catalog, "LATER", created=at("2026-11-24 09:00"))
    # C went to repair on the 21st: not on the lists while in repair
    catalog.run(lambda c: c.execute("INSERT INTO device_log (device_id, at, kind, status_from, status_to, actor)"
                                    " VALUES (?, ?, 'status', 'in_service', 'in_repair', 'dm')",
                                    (repaired.id, iso(at("2026-11-21 10:00")))))
    listed = catalog.run(deadlines.reconstruct, date(2026, 11, 23), end_of_day=EOD, tz=TZ)
    assert not listed.stored and listed.at == at("2026-11-23 18:00")
    # A docked on the 23rd; B last on the 22nd (not returned, 33 h: not overdue);
    # LATE docked only after the end of the day
    assert serials(listed.not_returned) == ["B", "LATE"]
    assert serials(listed.overdue) == ["LATE"]          # its docking before: none; registered long ago
    assert next(d for d in listed.not_returned if d.serial == "B").hours == 33.0
    before_repair = catalog.run(deadlines.reconstruct, date(2026, 11, 20), end_of_day=EOD, tz=TZ)
    assert "C" in serials(before_repair.overdue)


def test_a_kept_daily_list_is_kept_once_and_preferred(catalog):
    add(catalog, "A", docked=[at("2026-11-20 17:30")], created=at("2026-10-01 09:00"))
    add(catalog, "INSLOT", docked=[at("2026-11-20 17:30")], created=at("2026-10-01 09:00"))
    day = date(2026, 11, 24)
    kept = catalog.run(deadlines.store_daily_list, day, end_of_day=EOD, tz=TZ, docked={"INSLOT"})
    assert kept.stored and serials(kept.not_returned) == ["A"]
    assert catalog.run(deadlines.store_daily_list, day, end_of_day=EOD, tz=TZ) is None    # once
    listed = catalog.run(deadlines.daily_list, day, end_of_day=EOD, tz=TZ)
    assert listed.stored and serials(listed.not_returned) == ["A"] and serials(listed.overdue) == ["A"]
    row = catalog.run(lambda c: dict(c.execute("SELECT * FROM audit_log WHERE action = 'deadlines.daily'").fetchone()))
    assert row["subject"] == "2026-11-24" and '"A"' in row["details"] and "INSLOT" not in row["details"]
