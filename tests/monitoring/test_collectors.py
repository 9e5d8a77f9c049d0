"""The timed collectors: devices (art. 13, 15.1), audit chain, vault and ZFS figures, failures."""

import asyncio
import os
import sqlite3
import stat
import time
from datetime import datetime, time as dtime, timedelta, timezone

import pytest

from appliance.catalog import registry
from appliance.catalog.db import Catalog
from appliance.monitoring import check_audit_chain, device_counts, working_day_start
from appliance.timeutil import iso
from appliance.vault.zfs import ZfsVault
from tests.monitoring.test_metrics import value
from tests.support.appliance import make_config

TZ = "Asia/Shanghai"
EOD = dtime(18, 0)


def at(local: str) -> datetime:
    """A station-local time as an aware UTC datetime."""
    from zoneinfo import ZoneInfo

    return datetime.fromisoformat(local).replace(tzinfo=ZoneInfo(TZ)).astimezone(timezone.utc)


@pytest.fixture
def catalog(tmp_path):
    cat = Catalog(tmp_path / "catalog.sqlite")
    yield cat
    cat.close()


@pytest.fixture
async def app(harness):
    """The harness's appliance with the collectors' timers stopped: the test runs them."""
    monitor = harness.appliance.monitor
    for task in monitor._timers:
        task.cancel()
    await asyncio.gather(*monitor._timers, return_exceptions=True)
    await asyncio.gather(*monitor._running.values(), return_exceptions=True)
    harness.appliance.harness = harness
    return harness.appliance


def add(catalog: Catalog, serial: str, *, docked: datetime | None, created: datetime, status="in_service"):
    catalog.run(registry.add_device, serial, officer="张伟")
    catalog.run(lambda c: c.execute("UPDATE devices SET last_docked_at = ?, created_at = ?, status = ?"
                                    " WHERE serial = ?", (iso(docked) if docked else None, iso(created),
                                                          status, serial)))


def test_working_day_start_is_today_after_the_end_of_day_else_yesterday():
    assert working_day_start(at("2026-11-27 18:30"), TZ, EOD) == at("2026-11-27 00:00")
    assert working_day_start(at("2026-11-27 17:59"), TZ, EOD) == at("2026-11-26 00:00")
    assert working_day_start(at("2026-11-27 00:10"), TZ, EOD) == at("2026-11-26 00:00")


def test_overdue_after_two_days_and_not_returned_after_the_end_of_day(catalog):
    now = at("2026-11-27 19:00")
    long_ago = at("2026-10-01 09:00")
    add(catalog, "FRESH", docked=at("2026-11-27 17:40"), created=long_ago)      # returned today
    add(catalog, "YESTERDAY", docked=at("2026-11-26 17:00"), created=long_ago)  # not returned, not overdue
    add(catalog, "OLD", docked=at("2026-11-24 17:00"), created=long_ago)        # overdue and not returned
    add(catalog, "NEVER", docked=None, created=long_ago)                        # registered long ago, never docked
    add(catalog, "NEW", docked=None, created=at("2026-11-27 18:30"))            # registered after the end of day
    add(catalog, "DOCKED", docked=at("2026-11-20 08:00"), created=long_ago)     # in a slot right now
    add(catalog, "REPAIR", docked=at("2026-10-02 08:00"), created=long_ago, status="in_repair")
    counts = catalog.run(device_counts, now, TZ, EOD, {"DOCKED"})
    assert counts.by_status == {"in_service": 6, "in_repair": 1, "lost": 0, "retired": 0}
    assert counts.overdue == 2           # OLD, NEVER
    assert counts.not_returned == 3      # YESTERDAY, OLD, NEVER
    # before today's end of day, "not returned" is about yesterday: only OLD and NEVER missed it
    counts = catalog.run(device_counts, at("2026-11-27 12:00"), TZ, EOD, {"DOCKED"})
    assert counts.not_returned == 2
    assert counts.overdue == 2


def test_audit_chain_check_on_its_own_connection_sees_tampering(catalog):
    for n in range(20):
        catalog.run(registry.add_device, f"CAM{n}", officer="张伟")
    state = check_audit_chain(catalog.path)
    assert state.ok and state.rows >= 20
    conn = sqlite3.connect(catalog.path)
    conn.executescript("DROP TRIGGER audit_log_no_update;"
                       "UPDATE audit_log SET details = '{\"officer\": \"李娜\"}' WHERE seq = 5;")
    conn.close()
    broken = check_audit_chain(catalog.path)
    assert not broken.ok and broken.first_broken == 5


async def test_collectors_fill_the_gauges(app):
    app.harness.register("CAM001")
    app.catalog.run(lambda c: c.execute("UPDATE devices SET last_docked_at = ?",
                                        (iso(datetime.now(timezone.utc) - timedelta(days=3)),)))
    for name in ("vault", "verify", "devices", "snapshots", "scrub", "audit_chain"):
        assert await app.monitor.run(name), name
        assert value(app.metrics, "appliance_collector_success", collector=name) == 1
        assert value(app.metrics, "appliance_collector_last_success_timestamp_seconds", collector=name) > 0
    m = app.metrics
    assert value(m, "appliance_devices_overdue") == 1
    assert value(m, "appliance_devices", status="in_service") == 1
    assert value(m, "appliance_vault_free_bytes") > 0 and value(m, "appliance_vault_size_bytes") > 0
    assert value(m, "appliance_vault_pool_state", state="ONLINE") == 1
    assert value(m, "appliance_audit_chain_ok") == 1 and value(m, "appliance_audit_chain_rows") >= 2
    assert value(m, "appliance_vault_reserve_bytes") == 0
    # a camera in a slot is neither overdue nor missing
    app.board.update("1", state="copying", serial="CAM001")
    await app.monitor.run("devices")
    assert value(m, "appliance_devices_overdue") == 0


async def test_a_failing_collector_is_reported_and_the_others_and_the_scrape_go_on(app, monkeypatch):

    def broken():
        raise OSError("statvfs: Input/output error")

    monkeypatch.setattr(app.vault, "space", broken)
    assert not await app.monitor.run("vault")
    assert await app.monitor.run("devices")
    m = app.metrics
    assert value(m, "appliance_collector_success", collector="vault") == 0
    assert value(m, "appliance_collector_success", collector="devices") == 1
    assert b"appliance_collector_success" in m.render()


async def test_a_hung_collector_times_out_and_is_not_started_twice(app, monkeypatch):
    started = []
    release = asyncio.Event()

    async def hung():
        started.append(1)
        await release.wait()

    monkeypatch.setitem(app.monitor._collectors, "snapshots", hung)
    monkeypatch.setitem(app.monitor.intervals, "snapshots", (300, 0.2))
    t0 = time.monotonic()
    assert not await app.monitor.run("snapshots")
    assert not await app.monitor.run("snapshots")
    assert time.monotonic() - t0 < 2
    assert started == [1]
    assert value(app.metrics, "appliance_collector_success", collector="snapshots") == 0
    release.set()
    await asyncio.sleep(0)
    assert await app.monitor.run("snapshots") and started == [1, 1]


async def test_audit_chain_timer_rechecks_off_the_loop(app, monkeypatch):
    """The running appliance notices an edited audit row on its own timer."""
    assert value(app.metrics, "appliance_audit_chain_ok") == 1
    conn = sqlite3.connect(app.config.catalog_path)
    conn.executescript("DROP TRIGGER audit_log_no_update;"
                       "UPDATE audit_log SET actor = 'someone' WHERE seq = 1;")
    conn.close()
    monkeypatch.setitem(app.monitor.intervals, "audit_chain", (0.1, 10))
    task = asyncio.create_task(app.monitor._every("audit_chain", 0))
    try:
        for _ in range(100):
            await asyncio.sleep(0.05)
            if value(app.metrics, "appliance_audit_chain_ok") == 0:
                break
    finally:
        task.cancel()
    assert value(app.metrics, "appliance_audit_chain_ok") == 0


FAKE_ZFS = """#!/bin/sh
case "$*" in
  "list -H -p -o available,used tank/evidence") printf '1000\\t9000\\n' ;;
  "list -H -p -o name,available,used -r tank/evidence")
    printf 'tank/evidence\\t1000\\t9000\\ntank/evidence/media\\t1000\\t8000\\ntank/evidence/catalog\\t1000\\t1000\\n' ;;
  "list -H -p -t snapshot -o userrefs -r tank/evidence") printf '1\\n1\\n0\\n2\\n' ;;
  "list -H -o health tank") printf 'DEGRADED\\n' ;;
  "status tank") cat <<'EOT'
  pool: tank
 state: DEGRADED
  scan: scrub repaired 0B in 00:00:07 with 2 errors on Sun Nov 22 03:24:02 2026
config:
EOT
  ;;
  *) echo "fake zfs: unexpected: $*" >&2; exit 2 ;;
esac
"""


async def test_zfs_figures_per_dataset_snapshots_and_pool(app, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("zfs", "zpool"):
        (bin_dir / name).write_text(FAKE_ZFS)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    config = make_config(tmp_path, vault={"backend": "zfs", "dataset": "tank/evidence"})
    monkeypatch.setattr(app, "vault", ZfsVault(config))
    assert await app.monitor.run("vault") and await app.monitor.run("snapshots")
    assert await app.monitor.run("scrub")
    m = app.metrics
    assert value(m, "appliance_vault_free_bytes") == 1000 and value(m, "appliance_vault_used_bytes") == 9000
    assert value(m, "appliance_vault_dataset_used_bytes", dataset="tank/evidence/media") == 8000
    assert value(m, "appliance_vault_dataset_free_bytes", dataset="tank/evidence/catalog") == 1000
    assert value(m, "appliance_vault_snapshots_held") == 3
    assert value(m, "appliance_vault_pool_healthy") == 0
    assert value(m, "appliance_vault_pool_state", state="DEGRADED") == 1
    assert app.vault_health == "DEGRADED"
    assert value(m, "appliance_vault_pool_last_scrub_errors") == 2
    assert value(m, "appliance_vault_pool_last_scrub_timestamp_seconds") == datetime(2026, 11, 22, 3, 24, 2).timestamp()


@pytest.mark.parametrize("status, expected", [
    ("  scan: scrub repaired 0B in 00:00:01 with 0 errors on Sun Nov 10 00:24:02 2024\n", (2024, 0)),
    ("  scan: scrub repaired 1.50M in 01:02:03 with 3 errors on Mon Jan  6 23:59:59 2025\n", (2025, 3)),
    ("  scan: scrub in progress since Sun Nov 10 00:24:02 2024\n", None),
    ("  scan: resilvered 1.2G in 00:01:02 with 0 errors on Sun Nov 10 00:24:02 2024\n", None),
    ("  scan: none requested\n", None),
])
def test_parse_scrub(status, expected):
    from appliance.vault.zfs import parse_scrub

    got = parse_scrub("  pool: tank\n state: ONLINE\n" + status)
    assert (None if got is None else (datetime.fromtimestamp(got[0]).year, got[1])) == expected


def test_token_file_mode_warning_and_short_token(tmp_path, caplog):
    from appliance.daemon import Appliance
    from appliance.errors import ConfigError

    token = tmp_path / "token"
    token.write_text("short\n")
    with pytest.raises(ConfigError, match="at least 16"):
        Appliance(make_config(tmp_path, metrics={"listen": "127.0.0.1:0", "bearer_token_file": str(token)}))
    token.write_text("a-long-enough-token-0123456789\n")
    token.chmod(0o644)
    app = Appliance(make_config(tmp_path, metrics={"listen": "127.0.0.1:0", "bearer_token_file": str(token)}))
    try:
        assert "readable by others" in caplog.text
        assert app.monitor.authorized("Bearer a-long-enough-token-0123456789")
        assert not app.monitor.authorized("Bearer wrong")
        assert not app.monitor.authorized(None)
    finally:
        app.catalog.close()
        app.executor.shutdown()
        app.monitor.executor.shutdown()
    assert stat.S_IMODE(token.stat().st_mode) == 0o644


async def test_vault_full_clears_when_space_is_back(app):
    from appliance.metrics import SessionFinished

    app.bus.publish(SessionFinished("s", "failed", "vault full", 1.0, 0, False, vault_full=True))
    assert value(app.metrics, "appliance_vault_full") == 1
    await app.monitor.run("vault")  # reserve 0 in the harness: free space is above it
    assert value(app.metrics, "appliance_vault_full") == 0
