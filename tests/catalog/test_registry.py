"""The device registry (art. 4, 9, 11, 12, 20, 21) on a real appliance with really ingested
recordings: assignment history decides whose recordings they are, status and maintenance
are logged and audited, a camera that is not in service is flagged when it docks, and a
catalog from before migration 4 upgrades with its history."""

from __future__ import annotations

import os
import sqlite3
from datetime import datetime, timedelta, timezone

import pytest

from appliance.catalog import audit, registry
from appliance.catalog.db import Catalog
from appliance.catalog.schema import MIGRATIONS
from appliance.timeutil import iso
from tests.dock.test_session import camera


def _camera_at(root, serial: str, when: datetime, name: str = "DCIM/100/clip_0001.MP4"):
    """A camera folder holding one clip whose file time (the camera's wall clock) is ``when``."""
    src = camera(root, serial=serial, files={name: os.urandom(20_000)})
    wall = when.astimezone(timezone(timedelta(hours=8))).replace(tzinfo=timezone.utc).timestamp()
    os.utime(src / name, (wall, wall))
    return src


def _actions(harness, subject=None):
    sql = "SELECT action FROM audit_log" + (" WHERE subject = ?" if subject else "") + " ORDER BY seq"
    return [r["action"] for r in harness.rows(sql, *([subject] if subject else []))]


async def test_recordings_follow_the_officer_who_held_the_camera_at_the_time(harness, tmp_path):
    catalog = harness.catalog
    device = catalog.run(registry.add_device, "CAM100", officer="张伟", model="DSJ-T", brand="警翼",
                         asset_number="GZ-2024-0031", purchase_date="2024-03-01", custodian="王管理", actor="dm")
    # 张伟 held it from registration; it passes to 李娜 at `handover`
    handover = datetime.now(timezone.utc) - timedelta(days=1)
    catalog.run(lambda c: c.execute("UPDATE device_assignments SET since = ? WHERE device_id = ?",
                                    (iso(handover - timedelta(days=30)), device.id)))
    catalog.run(registry.assign, device.id, "李娜", actor="dm", reason="张伟 调岗", at=iso(handover))
    before = _camera_at(tmp_path / "a", "CAM100", handover - timedelta(hours=3), "DCIM/100/before_0001.MP4")
    assert (await harness.ingest(1, before)).result == "done"
    after = _camera_at(tmp_path / "b", "CAM100", handover + timedelta(hours=3), "DCIM/100/after_0002.MP4")
    assert (await harness.ingest(1, after)).result == "done"
    owners = {r["rel_path"]: r["name"] for r in harness.rows(
        "SELECT r.rel_path, o.name FROM recordings r JOIN officers o ON o.id = r.officer_id")}
    assert owners == {"DCIM/100/before_0001.MP4": "张伟", "DCIM/100/after_0002.MP4": "李娜"}
    history = catalog.run(registry.assignments, device.id)
    assert [(a["officer_name"], a["until"] is None) for a in history] == [("李娜", True), ("张伟", False)]
    assert history[1]["until"] == history[0]["since"] == iso(handover)
    assert "device.assign" in _actions(harness, "CAM100")


async def test_status_changes_and_maintenance_are_logged_and_audited(harness):
    catalog = harness.catalog
    device = catalog.run(registry.add_device, "CAM200", officer="张伟", actor="dm")
    catalog.run(registry.set_status, device.id, "in_repair", actor="dm", reason="镜头损坏送修")
    catalog.run(registry.log_work, device.id, "repair", day="2026-03-02", text="更换镜头模组",
                performed_by="厂家售后", actor="dm")
    catalog.run(registry.set_status, device.id, "in_service", actor="dm", reason="修复")
    with pytest.raises(registry.RegistryError, match="reason"):
        catalog.run(registry.set_status, device.id, "lost", actor="dm", reason=" ")
    with pytest.raises(registry.RegistryError, match="unknown status"):
        catalog.run(registry.set_status, device.id, "stolen", actor="dm", reason="x")
    log = catalog.run(registry.device_log, device.id)
    assert [(e["kind"], e["status_to"]) for e in log] == [("status", "in_service"), ("repair", None),
                                                         ("status", "in_repair")]
    assert log[1]["performed_by"] == "厂家售后" and log[1]["day"] == "2026-03-02"
    assert _actions(harness, "CAM200")[-3:] == ["device.status", "device.repair", "device.status"]
    # the status at a moment comes from the history
    assert catalog.run(registry.status_at, device.id, log[1]["at"]) == "in_repair"
    assert catalog.run(registry.status_at, device.id, "2000-01-01T00:00:00+00:00") == "in_service"


async def test_asset_numbers_are_unique_and_details_changes_are_audited(harness):
    catalog = harness.catalog
    a = catalog.run(registry.add_device, "CAM301", officer=None, asset_number="ZC-1", actor="dm")
    with pytest.raises(registry.RegistryError, match="belongs to CAM301"):
        catalog.run(registry.add_device, "CAM302", officer=None, asset_number="ZC-1", actor="dm")
    catalog.run(registry.update_details, a.id, actor="dm", brand="警翼", model="X8", asset_number="ZC-9",
                purchase_date="2025-01-15", custodian="王管理", notes="")
    row = harness.rows("SELECT details FROM audit_log WHERE action = 'device.update' AND subject = 'CAM301'")[-1]
    assert '"ZC-9"' in row["details"] and '"王管理"' in row["details"]
    with pytest.raises(registry.RegistryError, match="date"):
        catalog.run(registry.update_details, a.id, actor="dm", brand="", model="", asset_number="",
                    purchase_date="15/01/2025", custodian="", notes="")


@pytest.mark.parametrize("status", ["lost", "retired", "in_repair"])
async def test_a_camera_not_in_service_that_docks_is_flagged_and_still_ingested(harness, tmp_path, status):
    device = harness.catalog.run(registry.add_device, "CAM400", officer="张伟", actor="dm")
    harness.catalog.run(registry.set_status, device.id, status, actor="dm", reason="报告")
    result = await harness.ingest(2, camera(tmp_path / "cam", serial="CAM400"))
    assert result.result == "done" and not result.quarantined
    session = harness.rows("SELECT * FROM sessions WHERE id = ?", result.session_id)[0]
    assert session["device_flag"] == f"device_{status}"
    assert harness.rows("SELECT COUNT(*) AS n FROM recordings WHERE session_id = ?", result.session_id)[0]["n"] == 3
    flagged = harness.rows("SELECT * FROM audit_log WHERE action = 'device.docked-not-in-service'")
    assert len(flagged) == 1 and flagged[0]["subject"] == "CAM400" and result.session_id in flagged[0]["details"]
    docking = harness.catalog.run(registry.dockings, device.id)[0]
    assert docking["status"] == status and docking["session_id"] == result.session_id


async def test_an_in_service_camera_docks_without_a_flag(harness, tmp_path):
    harness.register("CAM500")
    result = await harness.ingest(1, camera(tmp_path / "cam", serial="CAM500"))
    assert harness.rows("SELECT device_flag FROM sessions WHERE id = ?", result.session_id)[0]["device_flag"] is None
    assert "device.docked-not-in-service" not in _actions(harness)
    assert harness.catalog.run(audit.verify_chain).ok


def test_a_catalog_from_before_migration_4_upgrades_with_its_history(tmp_path):
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    for script in MIGRATIONS[:3]:
        conn.executescript(script)
    conn.execute("PRAGMA user_version = 3")
    conn.execute("INSERT INTO officers (id, name, created_at) VALUES (1, '张伟', '2025-01-01T00:00:00+00:00')")
    conn.execute("INSERT INTO devices (id, serial, officer_id, created_at) VALUES"
                 " (1, 'OLD1', 1, '2025-01-02T00:00:00+00:00'), (2, 'OLD2', NULL, '2025-01-02T00:00:00+00:00')")
    conn.execute("INSERT INTO sessions (id, device_serial, device_id, officer_id, slot, profile, state, vault_dir,"
                 " started_at, updated_at) VALUES ('S1', 'OLD1', 1, 1, '1', 'generic', 'done', 'media/x',"
                 " '2025-02-01T00:00:00+00:00', '2025-02-01T00:00:00+00:00')")
    conn.commit()
    conn.close()
    catalog = Catalog(path)
    try:
        assert catalog.run(lambda c: c.execute("PRAGMA user_version").fetchone()[0]) == len(MIGRATIONS)
        history = catalog.run(registry.assignments, 1)
        assert [(a["officer_name"], a["since"]) for a in history] == [("张伟", "2025-01-02T00:00:00+00:00")]
        assert catalog.run(registry.assignments, 2) == []
        assert [d["session_id"] for d in catalog.run(registry.dockings, 1)] == ["S1"]
        assert catalog.run(registry.get_device, "OLD1").asset_number == ""
    finally:
        catalog.close()
