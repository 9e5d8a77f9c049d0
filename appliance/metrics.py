"""Every Prometheus metric of the process, in one place.

The metrics live in the appliance's own registry (no global default registry), are fed
from the event bus, and are rendered by the web listener at ``/metrics``. Labels stay
bounded: slots, results and states, never files or recordings.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

from appliance import __version__
from appliance.dock.board import STATE_WORDS, SlotChanged
from appliance.events import EventBus


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
    """The appliance's metrics, fed from the bus."""

    def __init__(self, bus: EventBus, slots: list[str]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.build_info = Info("appliance_build", "Version of the appliance software.", registry=r)
        self.build_info.info({"version": __version__})
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
        self.slot_state = Gauge("appliance_slot_state", "1 for the state each dock slot is in.",
                                ["slot", "state"], registry=r)
        self.slot_progress = Gauge("appliance_slot_progress_ratio", "Copy progress of each slot (0..1).",
                                   ["slot"], registry=r)
        self.vault_free = Gauge("appliance_vault_free_bytes", "Free bytes in the vault.", registry=r)
        self.vault_used = Gauge("appliance_vault_used_bytes", "Used bytes in the vault.", registry=r)
        self.vault_full = Gauge("appliance_vault_full",
                                "1 while ingest is refused or failed because the vault is full.", registry=r)
        self.audit_chain_ok = Gauge("appliance_audit_chain_ok", "1 when the audit log's hash chain verified.",
                                    registry=r)
        self.verify_last = Gauge("appliance_verify_last_run_timestamp_seconds",
                                 "When `appliance verify` last finished (Unix time).", registry=r)
        self.verify_problems = Gauge("appliance_verify_problems",
                                     "Problems the last `appliance verify` found.", registry=r)
        self.pool_healthy = Gauge("appliance_vault_pool_healthy", "1 when the vault's pool is ONLINE.",
                                  registry=r)
        for slot in slots:
            self._set_slot_state(slot, "empty")
            self.slot_progress.labels(slot).set(0)
        bus.subscribe(self._on_event)

    def _set_slot_state(self, slot: str, state: str) -> None:
        for s in STATE_WORDS:
            self.slot_state.labels(slot, s).set(1 if s == state else 0)

    def _on_event(self, event: object) -> None:
        if isinstance(event, SlotChanged):
            st = event.status
            if st.slot.startswith("port:"):
                slot = "unmapped"
            else:
                slot = st.slot
            self._set_slot_state(slot, st.state)
            self.slot_progress.labels(slot).set(st.progress)
        elif isinstance(event, FileIngested):
            self.ingest_files.labels(event.result).inc()
            self.ingest_bytes.labels(event.result).inc(event.size)
            if event.result == "mismatch":
                self.verify_failures.inc()
        elif isinstance(event, SessionFinished):
            self.sessions.labels(event.result).inc()
            self.duration.observe(event.seconds)
            if event.quarantined:
                self.unknown_cameras.inc()
            self.vault_full.set(1 if event.vault_full else 0)

    def render(self) -> bytes:
        """The text exposition format for a scrape."""
        return generate_latest(self.registry)
