"""What feeds the metrics besides the event bus: timed collectors, and the metrics listener.

Following node_exporter's advice for slow sources: nothing is collected at scrape time.
Each collector runs on its own timer, its blocking work in this module's own small thread
pool (never the event loop, never the ingest workers' pool), and reports its success,
duration and last success (``appliance_collector_*{collector}``), so that one failing or
hung collector leaves the others and the scrape untouched. A collector still running from
its last tick (a hung ``zfs`` command) is not started a second time; it counts as failed.

Collectors: ``vault`` (space, pool health, per-dataset space), ``verify`` (the last
``appliance verify`` run), ``devices`` (registry status, overdue, not returned),
``snapshots`` (held snapshots), ``scrub`` (the pool's last scrub) and ``audit_chain``
(re-walks the hash chain on its own read-only SQLite connection, so the catalog's writer
is never held up).

The metrics listener (``metrics.listen``) serves only ``/metrics``, optionally behind a
bearer token and TLS with client certificates; ``monitoring/README.md`` explains it.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import sqlite3
import ssl
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, time as dtime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from appliance.catalog import audit
from appliance.config import Config
from appliance.errors import ConfigError
from appliance.metrics import DEVICE_STATUSES
from appliance.vault.verify import last_run as last_verify_run

if TYPE_CHECKING:
    from appliance.daemon import Appliance

log = logging.getLogger(__name__)

# collector -> (seconds between runs, seconds before it counts as failed)
INTERVALS: dict[str, tuple[float, float]] = {
    "vault": (30, 20),
    "verify": (30, 10),
    "devices": (60, 10),
    "snapshots": (300, 120),
    "scrub": (300, 120),
    "audit_chain": (600, 300),
}
QUICK = ("vault", "verify", "devices")  # also run once at start, before the listeners
OVERDUE_AFTER = timedelta(days=2)  # regulation art. 13: onto the unit's storage within 2 days


# -- devices (pure functions, tested on their own) --------------------------------------------

@dataclass(frozen=True)
class DeviceCounts:
    by_status: dict[str, int]
    overdue: int
    not_returned: int


def working_day_start(now: datetime, tz_name: str, end_of_day: dtime) -> datetime:
    """Local midnight of the newest working day that has ended (its end of day <= now)."""
    local_now = now.astimezone(ZoneInfo(tz_name))
    day = local_now.date()
    if local_now.time() < end_of_day:
        day -= timedelta(days=1)
    return datetime.combine(day, dtime(0, 0), ZoneInfo(tz_name))


def device_counts(conn: sqlite3.Connection, now: datetime, tz_name: str, end_of_day: dtime,
                  docked: set[str]) -> DeviceCounts:
    """Registry counts for the metrics.

    Overdue (art. 13): in service, not in a slot now, and last docked (or, never docked,
    registered) more than two days ago. Not returned (art. 15.1): in service, not in a slot
    now, and not docked on the newest working day that has ended.
    """
    by_status = dict.fromkeys(DEVICE_STATUSES, 0)
    overdue = not_returned = 0
    day_start = working_day_start(now, tz_name, end_of_day)
    for row in conn.execute("SELECT serial, status, created_at, last_docked_at FROM devices"):
        status = row[1] if row[1] in by_status else "in_service"
        by_status[status] += 1
        if status != "in_service" or row[0] in docked:
            continue
        seen = _parse(row[3]) or _parse(row[2])
        if seen is None:
            continue
        if now - seen > OVERDUE_AFTER:
            overdue += 1
        if seen < day_start:
            not_returned += 1
    return DeviceCounts(by_status, overdue, not_returned)


def _parse(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def check_audit_chain(catalog_path: Path) -> audit.ChainState:
    """Walk the audit chain on a read-only connection of its own (WAL: the writer goes on)."""
    conn = sqlite3.connect(f"{catalog_path.resolve().as_uri()}?mode=ro", uri=True, timeout=30,
                           check_same_thread=False)
    conn.row_factory = sqlite3.Row
    try:
        return audit.verify_chain(conn)
    finally:
        conn.close()


# -- the monitor ---------------------------------------------------------------------------------

class Monitor:
    """Runs the collectors on their timers and the optional metrics listener."""

    def __init__(self, appliance: "Appliance") -> None:
        self.app = appliance
        self.metrics = appliance.metrics
        self.config: Config = appliance.config
        self.intervals = dict(INTERVALS)
        self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="monitor")
        self._collectors: dict[str, Callable[[], Awaitable[None]]] = {
            "vault": self._vault, "verify": self._verify, "devices": self._devices,
            "snapshots": self._snapshots, "scrub": self._scrub, "audit_chain": self._audit_chain,
        }
        self._running: dict[str, asyncio.Task[None]] = {}
        self._timers: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self._token = self._read_token()
        self.metrics.vault_reserve.set(self.config.vault.reserve)

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self, *, listener: bool = True) -> None:
        # The quick ones run before anything can scrape, so no first scrape shows a free
        # space of 0 (an alert without 'for' would fire); the audit chain was just walked.
        await self.refresh(*QUICK)
        for name in self._collectors:
            first = self.intervals[name][0] if name in QUICK or name == "audit_chain" else 0
            self._timers.append(asyncio.create_task(self._every(name, first), name=f"collect-{name}"))
        if listener and self.config.metrics.listen:
            await self._start_listener()

    async def stop(self) -> None:
        for task in self._timers:
            task.cancel()
        await asyncio.gather(*self._timers, return_exceptions=True)
        self._timers.clear()
        if self._runner:
            await self._runner.cleanup()
            self._runner = None
        for task in self._running.values():
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)
        # A thread stuck in a hung command is not waited for; the command has its own timeout.
        self.executor.shutdown(wait=False, cancel_futures=True)

    @property
    def listen_port(self) -> int | None:
        """The metrics listener's bound port (the config may say 0)."""
        for site in self._runner.sites if self._runner else []:
            server = getattr(site, "_server", None)
            if server and server.sockets:
                return server.sockets[0].getsockname()[1]
        return None

    # -- running collectors -------------------------------------------------------------------

    async def _every(self, name: str, first_delay: float) -> None:
        await asyncio.sleep(first_delay)
        while True:
            await self.run(name)
            await asyncio.sleep(self.intervals[name][0])

    async def refresh(self, *names: str) -> bool:
        """Run these collectors now (the web page's "refresh"); True when all succeeded."""
        results = await asyncio.gather(*(self.run(n) for n in names))
        return all(results)

    async def run(self, name: str) -> bool:
        """One run of a collector, with its bookkeeping; never raises (except cancellation)."""
        started, ok = time.perf_counter(), False
        task = self._running.get(name)
        if task is not None and not task.done():
            log.warning("collector %s: the previous run is still going; not started again", name)
        else:
            task = asyncio.ensure_future(self._collectors[name]())
            self._running[name] = task
        done, _ = await asyncio.wait({task}, timeout=self.intervals[name][1])
        if task in done and not task.cancelled():
            exc = task.exception()
            if exc is None:
                ok = True
            else:
                log.error("collector %s failed: %s", name, exc, exc_info=exc)
        else:
            log.warning("collector %s: no answer after %s s", name, self.intervals[name][1])
        self.metrics.collector_ran(name, ok, time.perf_counter() - started, time.time())
        return ok

    async def _off_loop(self, fn: Callable, *args: object):  # type: ignore[no-untyped-def]
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    # -- the collectors --------------------------------------------------------------------

    async def _vault(self) -> None:
        vault = self.app.vault
        space = await self._off_loop(vault.space)
        health = await self._off_loop(vault.health)
        self.app.last_space, self.app.vault_health = space, health
        self.metrics.set_vault(space.free_bytes, space.used_bytes, space.total_bytes, health)
        if space.free_bytes > self.config.vault.reserve:
            self.metrics.vault_full.set(0)  # space is back: the next docking will not be refused
        datasets = await self._off_loop(vault.dataset_space)
        if datasets is not None:
            self.metrics.set_datasets(datasets)

    async def _verify(self) -> None:
        run = await self.app.catalog.call(last_verify_run)
        if run:
            self.metrics.verify_last.set(datetime.fromisoformat(run["finished_at"]).timestamp())
            self.metrics.verify_problems.set(run["problems"])

    async def _devices(self) -> None:
        docked = {t.serial for t in self.app.board.all() if t.state != "empty" and t.serial}
        station = self.config.station
        counts = await self.app.catalog.call(device_counts, datetime.now(timezone.utc), station.timezone,
                                             station.end_of_day_time, docked)
        self.metrics.set_devices(counts.by_status, counts.overdue, counts.not_returned)

    async def _snapshots(self) -> None:
        held = await self._off_loop(self.app.vault.held_snapshots)
        self.metrics.snapshots_held.set(held or 0)

    async def _scrub(self) -> None:
        scrub = await self._off_loop(self.app.vault.last_scrub)
        if scrub is not None:
            self.metrics.scrub_last.set(scrub[0])
            self.metrics.scrub_errors.set(scrub[1])

    async def _audit_chain(self) -> None:
        state = await self._off_loop(check_audit_chain, self.config.catalog_path)
        self.metrics.set_audit_chain(state.ok, state.rows, time.time())
        if not state.ok:
            log.error("audit chain broken at row %s: %s", state.first_broken, state.reason)

    # -- the metrics listener -------------------------------------------------------------------

    def _read_token(self) -> str | None:
        path = self.config.metrics.bearer_token_file
        if path is None:
            return None
        try:
            token = path.read_text(encoding="utf-8").splitlines()[0].strip() if path.stat().st_size else ""
            mode = path.stat().st_mode
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"metrics.bearer_token_file: {path}: cannot read: {exc}") from None
        if len(token) < 16:
            raise ConfigError(f"metrics.bearer_token_file: {path}: the token must be at least 16 characters")
        if mode & 0o077:
            log.warning("metrics.bearer_token_file %s is readable by others (mode %o); use 0600",
                        path, mode & 0o777)
        return token

    def authorized(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header may read the metrics (always, without a token)."""
        if self._token is None:
            return True
        scheme, _, given = (authorization or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self._token.encode())

    def _ssl_context(self) -> ssl.SSLContext | None:
        tls = self.config.metrics.tls
        if tls is None:
            return None
        try:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(tls.cert_file, tls.key_file)
            if tls.client_ca_file:
                ctx.load_verify_locations(cafile=tls.client_ca_file)
                ctx.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"metrics.tls: {exc}") from None
        return ctx

    async def _serve_metrics(self, request: web.Request) -> web.Response:
        if not self.authorized(request.headers.get("Authorization")):
            return web.Response(status=401, text="bearer token required\n",
                                headers={"WWW-Authenticate": 'Bearer realm="appliance metrics"'})
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _start_listener(self) -> None:
        host_port = self.config.metrics.host_port
        assert host_port is not None
        app = web.Application(client_max_size=1024)
        app.router.add_get("/metrics", self._serve_metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host_port[0], host_port[1], ssl_context=self._ssl_context())
        await site.start()
        log.info("metrics listener on %s://%s:%s/metrics%s", "https" if self.config.metrics.tls else "http",
                 host_port[0], self.listen_port, " (bearer token)" if self._token else "")
