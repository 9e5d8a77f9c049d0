"""The metric set itself: names, types, labels, and what the events and methods do to it."""

import subprocess
import time

from prometheus_client.parser import text_string_to_metric_families

from appliance import __version__
from appliance.dock.board import STATE_WORDS, SlotChanged, SlotStatus
from appliance.events import EventBus
from appliance.metrics import (DRIVE_STATES, MAX_DRIVES, FileIngested, Metrics, SessionFinished)
from tests.monitoring.support import tool

# name -> (type, labels): the documented set (monitoring/README.md has the same table)
EXPECTED = {
    "appliance_build_info": ("gauge", {"version", "station_id"}),  # an Info: a gauge of 1 in text format
    "appliance_ingest_bytes": ("counter", {"result"}),
    "appliance_ingest_files": ("counter", {"result"}),
    "appliance_ingest_sessions": ("counter", {"result"}),
    "appliance_unknown_cameras": ("counter", set()),
    "appliance_hash_verify_failures": ("counter", set()),
    "appliance_ingest_duration_seconds": ("histogram", set()),
    "appliance_ingest_throughput_bytes_per_second": ("histogram", set()),
    "appliance_slot_state": ("gauge", {"slot", "state"}),
    "appliance_slot_progress_ratio": ("gauge", {"slot"}),
    "appliance_slot_copy_rate_bytes_per_second": ("gauge", {"slot"}),
    "appliance_slot_last_progress_timestamp_seconds": ("gauge", {"slot"}),
    "appliance_vault_free_bytes": ("gauge", set()),
    "appliance_vault_used_bytes": ("gauge", set()),
    "appliance_vault_size_bytes": ("gauge", set()),
    "appliance_vault_reserve_bytes": ("gauge", set()),
    "appliance_vault_full": ("gauge", set()),
    "appliance_vault_pool_healthy": ("gauge", set()),
    "appliance_vault_pool_state": ("gauge", {"state"}),
    "appliance_vault_dataset_free_bytes": ("gauge", {"dataset"}),
    "appliance_vault_dataset_used_bytes": ("gauge", {"dataset"}),
    "appliance_vault_snapshots_held": ("gauge", set()),
    "appliance_vault_pool_last_scrub_timestamp_seconds": ("gauge", set()),
    "appliance_vault_pool_last_scrub_errors": ("gauge", set()),
    "appliance_verify_last_run_timestamp_seconds": ("gauge", set()),
    "appliance_verify_problems": ("gauge", set()),
    "appliance_audit_chain_ok": ("gauge", set()),
    "appliance_audit_chain_rows": ("gauge", set()),
    "appliance_audit_chain_last_check_timestamp_seconds": ("gauge", set()),
    "appliance_devices": ("gauge", {"status"}),
    "appliance_devices_overdue": ("gauge", set()),
    "appliance_devices_not_returned": ("gauge", set()),
    "appliance_web_logins": ("counter", {"result"}),
    "appliance_replication_enabled": ("gauge", set()),
    "appliance_replication_last_success_timestamp_seconds": ("gauge", set()),
    "appliance_replication_lag_seconds": ("gauge", set()),
    "appliance_replication_bytes_sent": ("counter", set()),
    "appliance_replication_errors": ("counter", set()),
    "appliance_burn_jobs": ("counter", {"result"}),
    "appliance_discs_burned": ("counter", set()),
    "appliance_burn_verify_failures": ("counter", set()),
    "appliance_drive_state": ("gauge", {"drive", "state"}),
    "appliance_collector_success": ("gauge", {"collector"}),
    "appliance_collector_duration_seconds": ("gauge", {"collector"}),
    "appliance_collector_last_success_timestamp_seconds": ("gauge", {"collector"}),
    "appliance_metrics_render_duration_seconds": ("gauge", set()),
}


def filled_metrics() -> tuple[Metrics, EventBus]:
    """Metrics with every family given at least one sample."""
    bus = EventBus()
    m = Metrics(bus, ["1", "2"], station="st-7")
    bus.publish(FileIngested("verified", 1000))
    bus.publish(SessionFinished("s1", "done", None, 10.0, 50_000_000, False))
    m.set_vault(10, 20, 30, "ONLINE")
    m.set_datasets({"tank/ev/media": (1, 2)})
    m.set_devices({"in_service": 3}, 1, 2)
    m.set_audit_chain(True, 42, time.time())
    m.collector_ran("vault", True, 0.01, time.time())
    m.set_drive_state("/dev/sr0", "idle")
    m.render()
    return m, bus


def families(m: Metrics) -> dict:
    return {f.name: f for f in text_string_to_metric_families(m.render().decode())}


def value(m: Metrics, name: str, **labels: str) -> float | None:
    for fam in text_string_to_metric_families(m.render().decode()):
        for s in fam.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return None


def bucket(m: Metrics, name: str, le: float) -> float | None:
    for fam in text_string_to_metric_families(m.render().decode()):
        for s in fam.samples:
            if s.name == name + "_bucket" and float(s.labels["le"]) == le:
                return s.value
    return None


def test_the_metric_set_names_types_and_labels():
    m, _ = filled_metrics()
    fams = {n: f for n, f in families(m).items() if n.startswith("appliance_")}
    web_extras = {"appliance_web_lockouts", "appliance_web_requests_denied", "appliance_web_board_clients"}
    assert set(fams) - web_extras == set(EXPECTED), set(fams) ^ set(EXPECTED)
    for name, (kind, labels) in EXPECTED.items():
        fam = fams[name]
        assert fam.type == kind, name
        seen = set()
        for s in fam.samples:
            seen |= set(s.labels) - {"le"}
        assert seen == labels, (name, seen)
        if kind == "counter":
            assert all(s.name.endswith("_total") for s in fam.samples), name
    assert value(m, "appliance_build_info", version=__version__, station_id="st-7") == 1


def test_promtool_check_metrics_accepts_the_exposition():
    promtool = tool("promtool")
    m, _ = filled_metrics()
    out = subprocess.run([promtool, "check", "metrics"], input=m.render(), capture_output=True, timeout=30)
    assert out.returncode == 0, out.stdout.decode() + out.stderr.decode()


def test_results_are_there_before_anything_happened():
    """Counters by result exist at 0 from the start, so increase() sees the first failure."""
    m = Metrics(EventBus(), ["1"])
    for result in ("verified", "read_error", "mismatch", "vault_error"):
        assert value(m, "appliance_ingest_files_total", result=result) == 0
    for result in ("done", "failed", "interrupted"):
        assert value(m, "appliance_ingest_sessions_total", result=result) == 0
    assert value(m, "appliance_burn_jobs_total", result="failed") == 0
    assert value(m, "appliance_slot_state", slot="1", state="empty") == 1


def test_events_feed_ingest_counters_histograms_and_slots():
    bus = EventBus()
    m = Metrics(bus, ["1", "2"])
    bus.publish(FileIngested("verified", 4000))
    bus.publish(FileIngested("mismatch", 100))
    bus.publish(SessionFinished("s1", "done", None, 2.0, 40_000_000, quarantined=True))
    bus.publish(SessionFinished("s2", "failed", "vault full", 1.0, 0, False, vault_full=True))
    assert value(m, "appliance_ingest_bytes_total", result="verified") == 4000
    assert value(m, "appliance_hash_verify_failures_total") == 1
    assert value(m, "appliance_unknown_cameras_total") == 1
    assert value(m, "appliance_vault_full") == 1
    assert value(m, "appliance_ingest_sessions_total", result="failed") == 1
    assert value(m, "appliance_ingest_duration_seconds_count") == 2
    # only the session that copied something has a throughput: 20 MB/s
    assert value(m, "appliance_ingest_throughput_bytes_per_second_count") == 1
    assert bucket(m, "appliance_ingest_throughput_bytes_per_second", 20e6) == 1
    assert bucket(m, "appliance_ingest_throughput_bytes_per_second", 10e6) == 0


def test_slot_progress_time_moves_only_when_something_changes():
    bus = EventBus()
    m = Metrics(bus, ["1"])
    first = SlotStatus("1", state="copying", bytes_total=100, bytes_done=10, rate_bytes_per_s=5e6, updated=1000.0)
    bus.publish(SlotChanged(first))
    assert value(m, "appliance_slot_last_progress_timestamp_seconds", slot="1") == 1000.0
    assert value(m, "appliance_slot_copy_rate_bytes_per_second", slot="1") == 5e6
    # the session's progress reporter republishes every half second: same bytes, newer time
    bus.publish(SlotChanged(SlotStatus("1", state="copying", bytes_total=100, bytes_done=10, updated=1600.0)))
    assert value(m, "appliance_slot_last_progress_timestamp_seconds", slot="1") == 1000.0
    bus.publish(SlotChanged(SlotStatus("1", state="copying", bytes_total=100, bytes_done=50, updated=1700.0)))
    assert value(m, "appliance_slot_last_progress_timestamp_seconds", slot="1") == 1700.0
    assert value(m, "appliance_slot_progress_ratio", slot="1") == 0.5
    states = {s: value(m, "appliance_slot_state", slot="1", state=s) for s in STATE_WORDS}
    assert [s for s, v in states.items() if v == 1] == ["copying"]


def test_unmapped_ports_share_one_slot_label():
    bus = EventBus()
    m = Metrics(bus, ["1"])
    for n in range(50):
        bus.publish(SlotChanged(SlotStatus(f"port:pci-0000:00:14.0-usb-0:{n}", state="copying")))
    slots = {s.labels["slot"] for s in families(m)["appliance_slot_state"].samples}
    assert slots == {"1", "unmapped"}


def test_replication_methods_and_lag():
    m = Metrics(EventBus(), [])
    assert value(m, "appliance_replication_lag_seconds") == 0
    m.replication_configured(True)
    m.replication_succeeded(bytes_sent=5000, newest_snapshot_at=time.time() - 120, finished_at=1234.0)
    m.replication_failed()
    assert value(m, "appliance_replication_enabled") == 1
    assert value(m, "appliance_replication_last_success_timestamp_seconds") == 1234.0
    assert value(m, "appliance_replication_bytes_sent_total") == 5000
    assert value(m, "appliance_replication_errors_total") == 1
    assert 119 <= value(m, "appliance_replication_lag_seconds") < 200  # grows between runs, read at scrape


def test_burn_methods_and_bounded_drives():
    m = Metrics(EventBus(), [])
    m.burn_job_finished("done")
    m.burn_job_finished("weird")  # an unknown word is not a new series
    m.disc_burned()
    m.burn_verify_failed()
    m.drive_phase("/dev/sr0", "verifying")
    assert value(m, "appliance_burn_jobs_total", result="done") == 1
    assert value(m, "appliance_burn_jobs_total", result="failed") == 1
    assert value(m, "appliance_discs_burned_total") == 1
    assert value(m, "appliance_burn_verify_failures_total") == 1
    assert value(m, "appliance_drive_state", drive="/dev/sr0", state="verifying") == 1
    assert value(m, "appliance_drive_state", drive="/dev/sr0", state="idle") == 0
    for n in range(40):
        m.set_drive_state(f"stdio:/var/lib/appliance/pseudo-{n}.iso", "idle")
    drives = {s.labels["drive"] for s in families(m)["appliance_drive_state"].samples}
    assert len(drives) == MAX_DRIVES + 1 and "other" in drives
    assert len(families(m)["appliance_drive_state"].samples) == len(drives) * len(DRIVE_STATES)


def test_vault_pool_state_is_one_hot_and_datasets_follow_the_pool():
    m = Metrics(EventBus(), [])
    m.set_vault(1, 2, 3, "DEGRADED")
    assert value(m, "appliance_vault_pool_healthy") == 0
    assert value(m, "appliance_vault_pool_state", state="DEGRADED") == 1
    assert value(m, "appliance_vault_pool_state", state="ONLINE") == 0
    m.set_vault(1, 2, 3, "something new")
    assert value(m, "appliance_vault_pool_state", state="UNKNOWN") == 1
    m.set_datasets({"tank/ev": (5, 6), "tank/ev/old": (1, 1)})
    m.set_datasets({"tank/ev": (5, 7)})
    assert value(m, "appliance_vault_dataset_used_bytes", dataset="tank/ev") == 7
    assert value(m, "appliance_vault_dataset_used_bytes", dataset="tank/ev/old") is None


def test_render_is_cheap_and_times_itself():
    m, _ = filled_metrics()
    started = time.perf_counter()
    for _ in range(100):
        m.render()
    per_render = (time.perf_counter() - started) / 100
    assert per_render < 0.01, per_render
    assert 0 < value(m, "appliance_metrics_render_duration_seconds") < 0.05
