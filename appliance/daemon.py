"""``appliance run``: the one asyncio process that ties the parts together.

Blocking work (copying, hashing, SQLite, statvfs) runs in threads the loop awaits; the
loop itself only routes events. Long-lived tasks are kept referenced and cancelled in
stages at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress

from aiohttp import web

from appliance.catalog import audit
from appliance.catalog import sessions as cat
from appliance.catalog.db import Catalog
from appliance.config import Config
from appliance.dock.board import SlotBoard
from appliance.dock.control import ControlServer
from appliance.dock.events import DockAction, DockEvent
from appliance.dock.mount import unmount_all_under
from appliance.dock.recovery import recover_unfinished
from appliance.dock.session import IngestContext, IngestSession
from appliance.dock.slots import SlotMap
from appliance.events import EventBus
from appliance.metrics import Metrics, SessionFinished
from appliance.monitoring import Monitor
from appliance.vault import VaultSpace, open_vault
from appliance.vault.probe import probe
from appliance.vault.replication import Replicator
from appliance.web.app import make_app

log = logging.getLogger(__name__)

PROBE_BATCH = 20
STOP_TIMEOUT_S = 30


class Appliance:
    """A running appliance: vault, catalog, dock, web listener."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.bus = EventBus()
        self.vault = open_vault(config)
        self.vault.prepare()
        self.catalog = Catalog(config.catalog_path)
        self.slot_map = SlotMap(config.dock.slots)
        self.board = SlotBoard(self.slot_map.slots, self.bus)
        self.metrics = Metrics(self.bus, [str(s) for s in self.slot_map.slots], station=config.station.id)
        self.executor = ThreadPoolExecutor(max_workers=config.dock.io_concurrency + 2,
                                           thread_name_prefix="io")
        self.last_space: VaultSpace | None = None
        self.vault_health = "UNKNOWN"
        self._active: dict[str, tuple[IngestSession, asyncio.Task[str]]] = {}
        self._tasks: set[asyncio.Task[object]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._probe_wanted = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._control: ControlServer | None = None
        self._udev = None
        self.bus.subscribe(self._on_event)
        self.monitor = Monitor(self)  # timed collectors (vault, devices, audit chain) and metrics listener
        self.replicator: Replicator | None = None  # replication to headquarters (zfs-autobackup)
        if config.replication.enabled:
            self.replicator = Replicator(config, metrics=self.metrics, audit=self._audit_replication)

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self, *, udev: bool | None = None, web_listener: bool = True) -> None:
        """Recover, then start listening to the dock, the control socket and the web."""
        loop = asyncio.get_running_loop()
        # Slot mounts a crash left behind would make the next docking on that slot fail.
        for stale in await unmount_all_under(self.config.dock.mount_root):
            log.warning("removed a stale camera mount at %s", stale)
        recovered = await loop.run_in_executor(self.executor, recover_unfinished, self.catalog, self.vault)
        state = await self.catalog.call(audit.verify_chain)
        self.metrics.set_audit_chain(state.ok, state.rows, time.time())
        if not state.ok:
            log.error("audit chain broken at row %s: %s", state.first_broken, state.reason)
        await self.catalog.call(audit.append, audit.SYSTEM, "appliance.start", self.config.station.id,
                                {"recovered": [r.session_id for r in recovered]})
        self.ingest = IngestContext(self.config, self.catalog, self.vault, self.board, self.bus,
                                    asyncio.Semaphore(self.config.dock.io_concurrency), self.executor)
        await self.monitor.start(listener=web_listener)
        self._spawn(self._probe_forever())
        if self.replicator is not None:
            self._spawn(self.replicator.run_forever())
        self._control = ControlServer(self.config.state_dir / "dock.sock", self.slot_map.slots, self.dock)
        await self._control.start()
        if udev if udev is not None else self.config.dock.udev:
            self._start_udev(loop)
        if web_listener:
            self._runner = web.AppRunner(make_app(self), access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.config.web.host, self.config.web.port)
            await site.start()
            log.info("listening on http://%s:%s/", self.config.web.host, self.bound_port)

    @property
    def bound_port(self) -> int | None:
        """The web port actually bound (the config may say 0: any free port)."""
        if not self._runner:
            return None
        for site in self._runner.sites:
            server = getattr(site, "_server", None)
            if server and server.sockets:
                return server.sockets[0].getsockname()[1]
        return None

    def _start_udev(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            from appliance.dock.udev import UdevWatcher

            self._udev = UdevWatcher(self.slot_map, self.dock)
            self._udev.start(loop)
        except Exception as exc:  # no udev (a container, a laptop): manual docks still work
            log.warning("udev monitor not started: %s; only manual docking works", exc)
            self._udev = None

    async def stop(self) -> None:
        """Stop in stages: stop accepting, interrupt sessions, stop the web, close the catalog."""
        loop = asyncio.get_running_loop()
        if self._udev:
            self._udev.stop(loop)
        if self._control:
            await self._control.stop()
        sessions = [task for _s, task in self._active.values()]
        for task in sessions:
            task.cancel()
        if sessions:
            done, pending = await asyncio.wait(sessions, timeout=STOP_TIMEOUT_S)
            for task in pending:
                log.warning("session task %s still running at shutdown", task.get_name())
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.monitor.stop()
        if self._runner:
            await self._runner.cleanup()
        with suppress(Exception):
            await self.catalog.call(audit.append, audit.SYSTEM, "appliance.stop", self.config.station.id)
        self.executor.shutdown(wait=True)
        self.catalog.close()

    async def serve_forever(self) -> None:
        """Run until SIGTERM or SIGINT."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()

    # -- docking -----------------------------------------------------------------------

    def dock(self, event: DockEvent) -> None:
        """Route a dock event: start a session, or note that a camera left."""
        key = event.slot_key
        if event.action is DockAction.ADD:
            if key in self._active:
                log.info("slot %s: already has a session; ignoring a second add", key)
                return
            session = IngestSession(self.ingest, event)
            task = asyncio.create_task(session.run(), name=f"slot-{key}")
            self._active[key] = (session, task)
            self._idle.clear()
            task.add_done_callback(lambda _t, k=key: self._session_ended(k))
        else:
            active = self._active.get(key)
            if active:
                active[0].pulled = True
            else:
                self.board.clear(key)

    def _session_ended(self, key: str) -> None:
        self._active.pop(key, None)
        if not self._active:
            self._idle.set()
        self._probe_wanted.set()

    def busy_slots(self) -> list[str]:
        """Slots with a session running (upgrades must not restart the box then)."""
        return sorted(self._active)

    async def wait_idle(self) -> None:
        """Until no session is running."""
        await self._idle.wait()

    def _on_event(self, event: object) -> None:
        if isinstance(event, SessionFinished):
            self._probe_wanted.set()
            # a session that failed after copying may have committed some files: send those too
            if self.replicator is not None and event.session_id and (
                    event.result == "done" or (event.result == "failed" and event.bytes > 0)):
                self.replicator.ingest_committed()

    async def _audit_replication(self, action: str, subject: str, details: dict) -> None:
        await self.catalog.call(audit.append, audit.SYSTEM, action, subject, details)

    # -- background work ---------------------------------------------------------------

    def _spawn(self, coro) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def refresh_space(self) -> None:
        """Vault space, pool health and the last verify run, now, off the loop, into
        ``last_space``, ``vault_health`` and the gauges (the monitor also runs these on a timer)."""
        await self.monitor.refresh("vault", "verify")

    async def _probe_forever(self) -> None:
        """ffprobe new recordings one at a time, after the copies, never in their way."""
        while True:
            batch = await self.catalog.call(cat.unprobed, PROBE_BATCH)
            if not batch:
                self._probe_wanted.clear()
                await self._probe_wanted.wait()
                continue
            for recording_id, vault_path in batch:
                facts = await probe(self.vault.absolute(vault_path)) if self.config.ingest.ffprobe \
                    else {"error": "ffprobe disabled by configuration"}
                await self.catalog.call(cat.set_probe, recording_id, facts)


async def run_daemon(config: Config) -> None:
    """``appliance run``."""
    appliance = Appliance(config)
    await appliance.start()
    try:
        await appliance.serve_forever()
    finally:
        await appliance.stop()
