"""Every Prometheus metric of the process, in one place.

The metrics live in the appliance's own registry (no global default registry), are fed
from the event bus (slots, files, sessions) and from the timed collectors of
:mod:`appliance.monitoring` (vault, pool, devices, audit chain), and are rendered at
``/metrics``. A scrape only renders values already in memory: nothing slow, no I/O.

Naming follows the Prometheus guide: the ``appliance_`` prefix, base units (bytes,
seconds, ratios 0..1), ``_total`` on counters (prometheus-client adds it to the names
below). Labels stay bounded: slots, results, states, datasets, drives, collectors;
never files, recordings, sessions or devices. ``monitoring/README.md`` lists them all.

Later code (replication, burning) calls the documented methods at the end of the
class instead of touching the metric objects.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram, Info, ProcessCollector,
                               disable_created_metrics, generate_latest)

from appliance import __version__
from appliance.dock.board import STATE_WORDS, SlotChanged
from appliance.events import EventBus

FILE_RESULTS = ("verified", "read_error", "mismatch", "vault_error")
SESSION_RESULTS = ("done", "failed", "interrupted")
# zpool health words, plus the directory backend's READONLY and our UNKNOWN
POOL_STATES = ("ONLINE", "DEGRADED", "FAULTED", "OFFLINE", "UNAVAIL", "REMOVED", "SUSPENDED",
               "READONLY", "UNKNOWN")
DEVICE_STATUSES = ("in_service", "in_repair", "lost", "retired")
BURN_RESULTS = ("done", "failed", "cancelled")
DRIVE_STATES = ("idle", "writing", "verifying", "waiting_media", "failed")
# burner.model.BurnPhase -> drive state
_PHASE_STATE = {"checking": "writing", "ready": "writing", "writing": "writing", "closing": "writing",
                "written": "verifying", "verifying": "verifying", "verified": "idle", "ejected": "idle"}
MAX_DRIVES = 16  # more distinct drive names than this are counted as "other"
UNMAPPED_SLOT = "unmapped"  # every camera on a port the slot map does not name

# No *_created series beside every counter and histogram: they double the series and
# nothing here reads them (process-wide, like the choice of the registry's format).
disable_created_metrics()


@dataclass(frozen=True)
class FileIngested:
    """A file was copied (or failed to be)."""

    result: str  # 'verified', 'read_error', 'mismatch', 'vault_error'
    size: int


@dataclass(frozen=True)
class SessionFinished:
    """An ingest session reached a terminal state."""

    session_id: str
    result: str  # 'done', 'failed', 'interrupted'
    reason: str | None
    seconds: float
    bytes: int
    quarantined: bool
    vault_full: bool = False


class Metrics:
    """The appliance's metrics, fed from the bus and the collectors."""

    def __init__(self, bus: EventBus, slots: list[str], *, station: str = "") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)  # process_* : memory, CPU, open files, start time
        # station_id, not station: headquarters adds a `station` label to every series at
        # scrape time, and a scraped label of the same name would be renamed exported_station.
        self.build_info = Info("appliance_build",
                               "Version of the appliance software, and the station id from its config.",
                               registry=r)
        self.build_info.info({"version": __version__, "station_id": station})

        # -- ingest (events) ------------------------------------------------------------
        self.ingest_bytes = Counter("appliance_ingest_bytes", "Bytes copied into the vault, by result.",
                                    ["result"], registry=r)
        self.ingest_files = Counter("appliance_ingest_files", "Files copied into the vault, by result.",
                                    ["result"], registry=r)
        self.sessions = Counter("appliance_ingest_sessions", "Ingest sessions finished, by result.",
                                ["result"], registry=r)
        self.unknown_cameras = Counter("appliance_unknown_cameras",
                                       "Dockings of cameras not in the device registry (quarantined).",
                                       registry=r)
        self.verify_failures = Counter("appliance_hash_verify_failures",
                                       "Copies whose read-back hash differed from the source.", registry=r)
        self.duration = Histogram("appliance_ingest_duration_seconds", "Duration of ingest sessions.",
                                  buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200),
                                  registry=r)
        self.throughput = Histogram(
            "appliance_ingest_throughput_bytes_per_second",
            "Average copy rate of each ingest session that copied something (bytes / session seconds).",
            buckets=(1e6, 2.5e6, 5e6, 10e6, 20e6, 40e6, 80e6, 160e6, 320e6, 640e6, 1.28e9), registry=r)

        # -- slots (events) -------------------------------------------------------------
        self.slot_state = Gauge("appliance_slot_state", "1 for the state each dock slot is in.",
                                ["slot", "state"], registry=r)
        self.slot_progress = Gauge("appliance_slot_progress_ratio", "Copy progress of each slot (0..1).",
                                   ["slot"], registry=r)
        self.slot_rate = Gauge("appliance_slot_copy_rate_bytes_per_second",
                               "Current copy rate of each slot.", ["slot"], registry=r)
        self.slot_last_progress = Gauge(
            "appliance_slot_last_progress_timestamp_seconds",
            "When each slot last changed state or copied a byte (Unix time); a busy slot whose "
            "value stays old is stuck.", ["slot"], registry=r)

        # -- vault (collector "vault") --------------------------------------------------
        self.vault_free = Gauge("appliance_vault_free_bytes", "Free bytes in the vault.", registry=r)
        self.vault_used = Gauge("appliance_vault_used_bytes", "Used bytes in the vault.", registry=r)
        self.vault_size = Gauge("appliance_vault_size_bytes", "Size of the file system holding the vault.",
                                registry=r)
        self.vault_reserve = Gauge("appliance_vault_reserve_bytes",
                                   "Free space below which ingest refuses to start (vault.reserve).",
                                   registry=r)
        self.vault_full = Gauge("appliance_vault_full",
                                "1 after an ingest refused or failed for lack of space, until a session "
                                "succeeds or free space is above the reserve again.", registry=r)
        self.pool_healthy = Gauge("appliance_vault_pool_healthy", "1 when the vault's pool is ONLINE.",
                                  registry=r)
        self.pool_state = Gauge("appliance_vault_pool_state", "1 for the health word of the vault's pool.",
                                ["state"], registry=r)
        self.dataset_free = Gauge("appliance_vault_dataset_free_bytes",
                                  "Bytes available to each ZFS dataset of the vault.", ["dataset"], registry=r)
        self.dataset_used = Gauge("appliance_vault_dataset_used_bytes",
                                  "Bytes used by each ZFS dataset of the vault (with its children).",
                                  ["dataset"], registry=r)
        # collector "snapshots"
        self.snapshots_held = Gauge("appliance_vault_snapshots_held",
                                    "Snapshots of the vault that carry an evidence hold.", registry=r)
        # collector "scrub" (zfs backend only)
        self.scrub_last = Gauge("appliance_vault_pool_last_scrub_timestamp_seconds",
                                "When the pool's last scrub finished (Unix time; 0: none yet).", registry=r)
        self.scrub_errors = Gauge("appliance_vault_pool_last_scrub_errors",
                                  "Errors the pool's last finished scrub found.", registry=r)
        # collector "verify"
        self.verify_last = Gauge("appliance_verify_last_run_timestamp_seconds",
                                 "When `appliance verify` last finished (Unix time).", registry=r)
        self.verify_problems = Gauge("appliance_verify_problems",
                                     "Problems the last `appliance verify` found.", registry=r)

        # -- audit log (collector "audit_chain") ----------------------------------------
        self.audit_chain_ok = Gauge("appliance_audit_chain_ok", "1 when the audit log's hash chain verified.",
                                    registry=r)
        self.audit_rows = Gauge("appliance_audit_chain_rows", "Rows in the audit log at the last check.",
                                registry=r)
        self.audit_checked = Gauge("appliance_audit_chain_last_check_timestamp_seconds",
                                   "When the audit chain was last checked (Unix time).", registry=r)

        # -- devices (collector "devices") ----------------------------------------------
        self.devices = Gauge("appliance_devices", "Registered cameras, by status.", ["status"], registry=r)
        self.devices_overdue = Gauge(
            "appliance_devices_overdue",
            "Cameras in service not docked for 2 days (regulation art. 13).", registry=r)
        self.devices_not_returned = Gauge(
            "appliance_devices_not_returned",
            "Cameras in service not docked on the last working day and not in a slot, counted after "
            "station.end_of_day (regulation art. 15.1).", registry=r)

        # the web page (appliance/web): logins, lockouts, refused requests, live board screens
        self.web_logins = Counter("appliance_web_logins", "Login attempts on the web page, by result.",
                                  ["result"], registry=r)
        self.web_lockouts = Counter("appliance_web_lockouts",
                                    "Lockouts after repeated failed logins, by what was locked.",
                                    ["kind"], registry=r)
        self.web_denied = Counter("appliance_web_requests_denied",
                                  "Web requests refused by the access checks, by reason.",
                                  ["reason"], registry=r)
        self.web_board_clients = Gauge("appliance_web_board_clients",
                                       "Slot-board screens connected to the live stream.", registry=r)
        for result in ("ok", "failed", "locked"):
            self.web_logins.labels(result)

        # -- replication (declared; fed by the replication code) ------------------------
        self.replication_enabled = Gauge("appliance_replication_enabled",
                                         "1 when replication to headquarters is configured.", registry=r)
        self.replication_last_success = Gauge(
            "appliance_replication_last_success_timestamp_seconds",
            "When a replication run to headquarters last succeeded (Unix time; 0: never).", registry=r)
        self.replication_lag = Gauge(
            "appliance_replication_lag_seconds",
            "How long the oldest held ingest snapshot not yet at headquarters has existed only on "
            "the station (0: every session is at headquarters, or replication is off).",
            registry=r)
        self.replication_bytes = Counter("appliance_replication_bytes_sent",
                                         "Bytes sent to headquarters by replication.", registry=r)
        self.replication_errors = Counter("appliance_replication_errors", "Replication runs that failed.",
                                          registry=r)
        self._replication_on = False
        self._replicated_at = 0.0
        self._pending_known = False
        self._pending_since: float | None = None
        self.replication_lag.set_function(self._lag)

        # -- burning (declared; fed by the burn service) --------------------------------
        self.burn_jobs = Counter("appliance_burn_jobs", "Burn jobs finished, by result.", ["result"],
                                 registry=r)
        self.discs_burned = Counter("appliance_discs_burned", "Discs burned and verified.", registry=r)
        self.burn_verify_failures = Counter("appliance_burn_verify_failures",
                                            "Discs whose read-back differed from the image.", registry=r)
        self.drive_state = Gauge("appliance_drive_state", "1 for the state each optical drive is in.",
                                 ["drive", "state"], registry=r)
        for result in ("done", "failed"):
            self.burn_jobs.labels(result)

        # -- the collectors themselves and the scrape -----------------------------------
        self.collector_success = Gauge("appliance_collector_success",
                                       "1 when the collector's last run succeeded.", ["collector"], registry=r)
        self.collector_duration = Gauge("appliance_collector_duration_seconds",
                                        "How long the collector's last run took.", ["collector"], registry=r)
        self.collector_last_success = Gauge(
            "appliance_collector_last_success_timestamp_seconds",
            "When the collector last succeeded (Unix time); its metrics are as old as this.",
            ["collector"], registry=r)
        self.render_seconds = Gauge("appliance_metrics_render_duration_seconds",
                                    "How long rendering the previous /metrics answer took.", registry=r)

        for result in FILE_RESULTS:
            self.ingest_files.labels(result)
            self.ingest_bytes.labels(result)
        for result in SESSION_RESULTS:
            self.sessions.labels(result)
        self._slots = set(slots)
        self._slot_seen: dict[str, tuple] = {}
        self._drives: set[str] = set()
        now = time.time()
        for slot in slots:
            self._set_slot_state(slot, "empty")
            self.slot_progress.labels(slot).set(0)
            self.slot_rate.labels(slot).set(0)
            self.slot_last_progress.labels(slot).set(now)
        bus.subscribe(self._on_event)

    # -- events ----------------------------------------------------------------------------

    def _set_slot_state(self, slot: str, state: str) -> None:
        for s in STATE_WORDS:
            self.slot_state.labels(slot, s).set(1 if s == state else 0)

    def _on_event(self, event: object) -> None:
        if isinstance(event, SlotChanged):
            st = event.status
            slot = st.slot if st.slot in self._slots else UNMAPPED_SLOT
            self._set_slot_state(slot, st.state)
            self.slot_progress.labels(slot).set(st.progress)
            self.slot_rate.labels(slot).set(st.rate_bytes_per_s if st.state == "copying" else 0)
            seen = (st.state, st.bytes_done, st.files_done, st.session_id)
            if self._slot_seen.get(slot) != seen:
                self._slot_seen[slot] = seen
                self.slot_last_progress.labels(slot).set(st.updated)
        elif isinstance(event, FileIngested):
            self.ingest_files.labels(event.result).inc()
            self.ingest_bytes.labels(event.result).inc(event.size)
            if event.result == "mismatch":
                self.verify_failures.inc()
        elif isinstance(event, SessionFinished):
            self.sessions.labels(event.result).inc()
            self.duration.observe(event.seconds)
            if event.bytes > 0 and event.seconds > 0:
                self.throughput.observe(event.bytes / event.seconds)
            if event.quarantined:
                self.unknown_cameras.inc()
            self.vault_full.set(1 if event.vault_full else 0)

    # -- collectors (appliance.monitoring) ----------------------------------------------------

    def set_vault(self, free: int, used: int, size: int, health: str) -> None:
        """The vault's space and its pool's health word."""
        self.vault_free.set(free)
        self.vault_used.set(used)
        self.vault_size.set(size)
        self.pool_healthy.set(1 if health == "ONLINE" else 0)
        word = health if health in POOL_STATES else "UNKNOWN"
        for s in POOL_STATES:
            self.pool_state.labels(s).set(1 if s == word else 0)

    def set_datasets(self, space: dict[str, tuple[int, int]]) -> None:
        """Free and used bytes per dataset; datasets that disappeared lose their series."""
        self.dataset_free.clear()
        self.dataset_used.clear()
        for name, (free, used) in space.items():
            self.dataset_free.labels(name).set(free)
            self.dataset_used.labels(name).set(used)

    def set_devices(self, by_status: dict[str, int], overdue: int, not_returned: int) -> None:
        for status in DEVICE_STATUSES:
            self.devices.labels(status).set(by_status.get(status, 0))
        self.devices_overdue.set(overdue)
        self.devices_not_returned.set(not_returned)

    def set_audit_chain(self, ok: bool, rows: int, checked_at: float) -> None:
        self.audit_chain_ok.set(1 if ok else 0)
        self.audit_rows.set(rows)
        self.audit_checked.set(checked_at)

    def collector_ran(self, name: str, ok: bool, seconds: float, finished_at: float) -> None:
        """Bookkeeping of one collector run (``appliance.monitoring`` calls it)."""
        self.collector_success.labels(name).set(1 if ok else 0)
        self.collector_duration.labels(name).set(seconds)
        if ok:
            self.collector_last_success.labels(name).set(finished_at)
        else:
            self.collector_last_success.labels(name)  # the series exists (0: never) even before a success

    # -- replication: the replication code calls these ---------------------------------------

    def replication_configured(self, enabled: bool) -> None:
        """Replication to headquarters is (not) configured; the stale alert needs 1 here."""
        self._replication_on = enabled
        self.replication_enabled.set(1 if enabled else 0)

    def replication_succeeded(self, *, bytes_sent: int, newest_snapshot_at: float | None,
                              finished_at: float | None = None) -> None:
        """A replication run finished: what it sent, and the creation time of the newest
        snapshot now at headquarters (Unix time), from which the lag is computed at scrape."""
        self.replication_last_success.set(finished_at if finished_at is not None else time.time())
        if bytes_sent > 0:
            self.replication_bytes.inc(bytes_sent)
        if newest_snapshot_at:
            self._replicated_at = newest_snapshot_at

    def replication_failed(self, bytes_sent: int = 0) -> None:
        """A replication run failed (the log says why); what it sent before failing still counts."""
        self.replication_errors.inc()
        if bytes_sent > 0:
            self.replication_bytes.inc(bytes_sent)

    def replication_pending(self, oldest_unsent_at: float | None) -> None:
        """Creation time (Unix) of the oldest held ingest snapshot not yet at headquarters, None
        when every one is there: the lag is its age, computed at scrape (so it grows while HQ is
        unreachable). Once called, this replaces the lag from ``newest_snapshot_at``."""
        self._pending_known = True
        self._pending_since = oldest_unsent_at

    def _lag(self) -> float:
        if not self._replication_on:
            return 0.0
        if self._pending_known:
            return 0.0 if self._pending_since is None else max(0.0, time.time() - self._pending_since)
        if not self._replicated_at:
            return 0.0
        return max(0.0, time.time() - self._replicated_at)

    # -- burning: the burn service calls these ------------------------------------------------

    def burn_job_finished(self, result: str) -> None:
        """A burn job ended: ``done``, ``failed`` or ``cancelled``."""
        self.burn_jobs.labels(result if result in BURN_RESULTS else "failed").inc()

    def disc_burned(self) -> None:
        """A disc was written and its read-back verified."""
        self.discs_burned.inc()

    def burn_verify_failed(self) -> None:
        """A disc's read-back did not match its image."""
        self.burn_verify_failures.inc()

    def set_drive_state(self, drive: str, state: str) -> None:
        """One of :data:`DRIVE_STATES` for a drive (``/dev/sr0``, a pseudo-drive's name)."""
        if drive not in self._drives and len(self._drives) >= MAX_DRIVES:
            drive = "other"
        self._drives.add(drive)
        state = state if state in DRIVE_STATES else "failed"
        for s in DRIVE_STATES:
            self.drive_state.labels(drive, s).set(1 if s == state else 0)

    def drive_phase(self, drive: str, phase: str) -> None:
        """The same from a :class:`appliance.burner.model.BurnProgress` phase."""
        self.set_drive_state(drive, _PHASE_STATE.get(phase, "writing"))

    # -- the scrape --------------------------------------------------------------------------

    def render(self) -> bytes:
        """The text exposition format for a scrape: values in memory only, no I/O."""
        started = time.perf_counter()
        body = generate_latest(self.registry)
        self.render_seconds.set(time.perf_counter() - started)
        return body
