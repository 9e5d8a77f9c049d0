"""One docking of one camera, from plug-in to "safe to remove": the ingest state machine.

    docked → identifying → mounting → copying → verifying → committing → clock-sync
           → wiping → done                     (and interrupted / failed, with a reason)

A session never raises to its caller: whatever goes wrong ends in ``failed`` or
``interrupted`` with a reason on the slot and in the catalog, so one broken camera never
stops another slot. The camera is written to only after the session is committed and
sealed, and only files that are verified in the vault are deleted from it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from appliance.catalog import registry
from appliance.catalog import sessions as cat
from appliance.catalog.db import Catalog
from appliance.config import CameraProfile, Config
from appliance.dock.board import SlotBoard
from appliance.dock.camera import CameraFile, list_media, read_identity, select_profile, \
    wipe_files, write_clock_file
from appliance.dock.events import DockEvent, SourceKind
from appliance.dock.mount import MountedVolume, mount_volume, remount, unmount_volume
from appliance.errors import (
    ApplianceError,
    DeviceGone,
    MountError,
    SourceReadError,
    VaultError,
    VaultFullError,
    VerifyMismatch,
)
from appliance.events import EventBus
from appliance.metrics import FileIngested, SessionFinished
from appliance.timeutil import camera_time, utcnow
from appliance.vault.base import Vault
from appliance.vault.copier import copy_verified, remove_partials
from appliance.vault.layout import FILES, display_path, new_session_id, session_relpath
from appliance.vault.manifest import SessionFacts, build_manifest, write_manifest

log = logging.getLogger(__name__)

# A USB disk pulled out fails the reads in flight with EIO a moment before udev reports its
# removal (seen in the system tests: the read error came first in one unplug out of five).
# Before a read error on a block device counts as a bad file, wait this long for the removal.
REMOVAL_GRACE_S = 3.0


@dataclass
class IngestContext:
    """What every session shares: handed down by the daemon, no globals."""

    config: Config
    catalog: Catalog
    vault: Vault
    board: SlotBoard
    bus: EventBus
    io_slots: asyncio.Semaphore
    executor: ThreadPoolExecutor


class SessionAbort(Exception):
    """Ends a session early with a terminal state and a reason for the slot."""

    def __init__(self, state: str, reason_zh: str, reason_en: str, *, vault_full: bool = False) -> None:
        super().__init__(reason_en)
        self.state, self.reason_zh, self.reason_en, self.vault_full = state, reason_zh, reason_en, vault_full


class IngestSession:
    """The state machine of one docking."""

    def __init__(self, ctx: IngestContext, event: DockEvent) -> None:
        self.ctx = ctx
        self.event = event
        self.slot = event.slot_key
        self.pulled = False
        self.session_id: str | None = None
        self.serial = event.serial or "unknown"
        self.quarantined = False
        self._volume: MountedVolume | None = None
        self._started = time.monotonic()
        self._problems: list[str] = []  # files that could not be read: the session failed
        self._warnings: list[str] = []  # the camera could not be written: evidence is safe
        self._bytes_before = 0  # verified before this docking (a resumed session)
        self._file_progress: list[list[int]] = []

    # -- the whole run ---------------------------------------------------------------

    async def run(self) -> str:
        """Run to a terminal state and return it. Never raises (except cancellation)."""
        state, reason_zh, reason_en, vault_full = "done", "", "", False
        try:
            await self._run()
            if self._problems:
                state = "failed"
                reason_en = "; ".join(self._problems[:5])
                reason_zh = f"{len(self._problems)} 个文件读取失败，其余已安全归档，记录仪未清理"
            elif self._warnings:
                reason_en = "; ".join(self._warnings)
                reason_zh = "已安全归档，可以拔出；但未能写入记录仪（时钟未校准或未清理）"
        except SessionAbort as abort:
            state, reason_zh, reason_en, vault_full = (abort.state, abort.reason_zh, abort.reason_en,
                                                       abort.vault_full)
        except VaultFullError as exc:  # the catalog, on the vault's disk, could not grow
            state, reason_zh, reason_en, vault_full = ("failed", "证据库空间不足，复制已停止，记录仪未清理",
                                                       f"vault full: {exc}", True)
        except asyncio.CancelledError:
            state, reason_zh, reason_en = "interrupted", "服务停止", "daemon stopping"
            await self._finish(state, reason_zh, reason_en, vault_full)
            raise
        except Exception as exc:  # a bug must end this slot, never the daemon
            log.exception("slot %s: session %s crashed", self.slot, self.session_id)
            state, reason_zh, reason_en = "failed", "内部错误", f"internal error: {exc}"
        await self._finish(state, reason_zh, reason_en, vault_full)
        return state

    async def _run(self) -> None:
        ev = self.event
        self._tile("docked", serial=ev.serial, port_path=ev.port_path)
        self._tile("identifying")
        profile = select_profile(self.ctx.config.profiles, ev.vendor, ev.model)
        self._tile("mounting")
        try:
            self._volume = await mount_volume(ev.source, self._mount_point(), fs_type=ev.fs_type)
        except MountError as exc:
            await self._open_session(ev.serial or "unknown", profile, {"mount_error": str(exc)})
            raise SessionAbort("failed", "无法读取记录仪存储（文件系统损坏或不支持）", str(exc)) from None
        serial = read_identity(self._volume.path, profile) or ev.serial or "unknown"
        device = await self._open_session(serial, profile, {"fs": self._volume.fs_type,
                                                             "driver": self._volume.driver})
        self._check_space()
        files = await self._copy_all(profile)
        self._tile("verifying")
        await self._verify_present()
        self._tile("committing")
        await self._commit(serial, device, profile, files)
        if self.quarantined:
            return  # an unknown camera is never written to
        await self._clock_sync_and_wipe(profile)

    # -- steps -----------------------------------------------------------------------

    async def _open_session(self, serial: str, profile: CameraProfile, details: dict) -> registry.Device | None:
        """Find the device, resume an unfinished session of it or start a new one."""
        ctx = self.ctx
        self.serial = serial
        device = await ctx.catalog.call(registry.get_device, serial)
        self.quarantined = device is None
        previous = await ctx.catalog.call(cat.resumable, serial)
        if previous is not None:
            self.session_id = previous.id
            self._session_dir = ctx.vault.root / previous.vault_dir
            ctx.vault.make_session_dir(Path(previous.vault_dir) / FILES)
            await ctx.catalog.call(cat.resume, previous.id, self.slot)
        else:
            started = utcnow()
            self.session_id = new_session_id(serial, started, ctx.config.station.timezone)
            rel = session_relpath(self.session_id, serial, started, ctx.config.station.timezone,
                                  self.quarantined)
            self._session_dir = ctx.vault.make_session_dir(rel / FILES).parent
            await ctx.catalog.call(cat.create, cat.NewSession(
                id=self.session_id, device_serial=serial, device_id=device.id if device else None,
                officer_id=device.officer_id if device else None, slot=self.slot,
                port_path=self.event.port_path, profile=profile.name, quarantined=self.quarantined,
                vault_dir=str(rel), details=details))
        if device:  # remembers the docking; flags a camera that is not in service (art. 4)
            await ctx.catalog.call(registry.mark_docked, serial, self.session_id)
        self._tile(None, serial=serial, session_id=self.session_id, quarantined=self.quarantined,
                   officer=device.officer_name if device else None)
        return device

    def _check_space(self) -> None:
        space = self.ctx.vault.space()
        if space.free_bytes < self.ctx.config.vault.reserve:
            raise SessionAbort("failed", "证据库空间不足，请联系管理员",
                               f"vault full: {space.free_bytes} bytes free, reserve is "
                               f"{self.ctx.config.vault.reserve}", vault_full=True)

    async def _copy_all(self, profile: CameraProfile) -> list[CameraFile]:
        """Copy every file not yet in the vault; return every media file of this session."""
        ctx, volume = self.ctx, self._volume
        assert volume is not None and self.session_id is not None
        listing = await asyncio.get_running_loop().run_in_executor(
            ctx.executor, list_media, volume.path, profile)
        for rel, why in listing.skipped:
            log.info("slot %s: passed over %s: %s", self.slot, display_path(rel), why)
        committed = await ctx.catalog.call(cat.already_ingested, self.serial)
        verified = {f.rel_path_raw for f in await ctx.catalog.call(cat.verified_files, self.session_id)}
        todo = [f for f in listing.files if f.key not in committed]
        pending = self._drop_name_collisions([f for f in todo if f.rel_raw not in verified])
        await ctx.catalog.call(cat.set_state, self.session_id, "copying")
        total = sum(f.size for f in todo)
        done_before = sum(f.size for f in todo if f.rel_raw in verified)
        self._bytes_before = done_before
        self._tile("copying", files_total=len(todo), files_done=len(todo) - len(pending),
                   bytes_total=total, bytes_done=done_before)
        await ctx.catalog.call(cat.set_totals, self.session_id, len(todo), total)
        ticker = asyncio.create_task(self._report_progress(total, len(todo)))
        try:
            results = await asyncio.gather(*(self._copy_one(f) for f in pending), return_exceptions=True)
        finally:
            ticker.cancel()
        await self._raise_first_fatal(results)
        return todo

    def _drop_name_collisions(self, files: list[CameraFile]) -> list[CameraFile]:
        """Two camera names that differ only in invalid bytes would share one vault name."""
        seen: set[str] = set()
        out = []
        for f in files:
            name = display_path(f.rel_raw)
            if name in seen:
                self._problems.append(f"{name}: another file on the camera has the same vault name")
                continue
            seen.add(name)
            out.append(f)
        return out

    @property
    def _bytes_done(self) -> int:
        return self._bytes_before + sum(c[0] for c in self._file_progress)

    async def _raise_first_fatal(self, results: list[object]) -> None:
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, SourceReadError):
                raise result
        if any(isinstance(r, SourceReadError) for r in results):
            await self._wait_for_removal()
        if self.pulled or any(isinstance(r, DeviceGone) for r in results):
            raise SessionAbort("interrupted", "复制中记录仪被拔出，请重新插入以继续",
                               "camera removed during copy; dock it again to resume")
        self._problems.extend(str(r) for r in results if isinstance(r, SourceReadError))

    async def _wait_for_removal(self) -> None:
        """After a read error on a camera's block device: was the camera just pulled out?
        The kernel fails the reads (EIO) before udev's remove event reaches :attr:`pulled`.
        Waiting for that event (not only for the device node to go) also keeps the order the
        board needs: removal first, then "interrupted", which then stays on the tile."""
        if self.event.kind is not SourceKind.BLOCK:
            return
        deadline = time.monotonic() + REMOVAL_GRACE_S
        while not self.pulled and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if not self.pulled and not os.path.exists(self.event.source):
            self.pulled = True  # the kernel removed the device; udev has not said so (yet)

    async def _copy_one(self, f: CameraFile) -> None:
        ctx, volume = self.ctx, self._volume
        assert volume is not None and self.session_id is not None
        src = Path(os.fsdecode(os.path.join(os.fsencode(volume.path), f.rel_raw)))
        # The vault holds only valid UTF-8 names (ZFS utf8only, UDF discs): an invalid byte in
        # a camera name becomes a visible \xNN escape; the manifest keeps the exact bytes.
        dest = self._session_dir / FILES / display_path(f.rel_raw)
        loop = asyncio.get_running_loop()

        counter = [0]  # written by this file's worker thread only; summed for the tile
        self._file_progress.append(counter)

        def progress(n: int) -> None:
            counter[0] += n

        async with ctx.io_slots:
            if self.pulled:
                raise DeviceGone(display_path(f.rel_raw))
            try:
                await loop.run_in_executor(ctx.executor, dest.parent.mkdir, 0o755, True, True)
                result = await loop.run_in_executor(
                    ctx.executor, copy_verified, src, dest, ctx.config.ingest.hashes,
                    ctx.config.dock.block_size, progress)
            except VerifyMismatch:
                ctx.bus.publish(FileIngested("mismatch", f.size))
                raise
            except VaultFullError as exc:
                ctx.bus.publish(FileIngested("vault_error", 0))
                raise SessionAbort("failed", "证据库空间不足，复制已停止，记录仪未清理",
                                   f"vault full during copy: {exc}", vault_full=True) from None
            except VaultError:
                ctx.bus.publish(FileIngested("vault_error", 0))
                raise
            except SourceReadError:
                ctx.bus.publish(FileIngested("read_error", 0))
                raise
        if result.size != f.size or result.mtime_ns != f.mtime_ns:
            raise SourceReadError(f"{display_path(f.rel_raw)}: changed between listing and copy")
        await ctx.catalog.call(cat.add_verified_file, self.session_id, cat.VerifiedFile(
            rel_path_raw=f.rel_raw, rel_path=display_path(f.rel_raw),
            vault_path=ctx.vault.relative(dest), size=f.size, mtime_ns=f.mtime_ns,
            sha256=result.digests.sha256, sm3=result.digests.get("sm3")))
        ctx.bus.publish(FileIngested("verified", f.size))
        status = self.ctx.board.get(self.slot)
        self._tile(None, files_done=status.files_done + 1)

    async def _report_progress(self, total: int, files: int) -> None:
        last_bytes, last_time = self._bytes_done, time.monotonic()
        while True:
            await asyncio.sleep(0.5)
            now = time.monotonic()
            rate = (self._bytes_done - last_bytes) / (now - last_time)
            last_bytes, last_time = self._bytes_done, now
            self._tile(None, bytes_done=min(self._bytes_done, total), rate_bytes_per_s=round(rate))

    async def _verify_present(self) -> None:
        """Every verified file is still where the catalog says, at its size."""
        assert self.session_id is not None
        ctx = self.ctx
        await ctx.catalog.call(cat.set_state, self.session_id, "verifying")
        for f in await ctx.catalog.call(cat.verified_files, self.session_id):
            path = ctx.vault.absolute(f.vault_path)
            try:
                size = path.stat().st_size
            except OSError:
                size = -1
            if size != f.size:
                raise SessionAbort("failed", "证据库中的文件丢失或被改动", f"{f.rel_path}: missing or "
                                   f"changed in the vault before commit")

    async def _commit(self, serial: str, device: registry.Device | None, profile: CameraProfile,
                      files: list[CameraFile]) -> None:
        assert self.session_id is not None
        ctx = self.ctx
        verified = await ctx.catalog.call(cat.verified_files, self.session_id)
        station_now = utcnow()
        newest = max((f.mtime_ns for f in files), default=None)
        tz = ctx.config.station.timezone
        camera_newest = camera_time(newest, tz) if newest is not None else None
        drift = round((camera_newest - station_now).total_seconds(), 3) if camera_newest else None
        facts = SessionFacts(
            session_id=self.session_id, station_id=ctx.config.station.id,
            station_name=ctx.config.station.name, device_serial=serial,
            device_model=(device.model if device else "") or profile.model, officer=device.officer_name
            if device else None, slot=self.slot, quarantined=self.quarantined,
            started_at=station_now, committed_at=station_now, camera_newest=camera_newest,
            clock_drift_s=drift, algorithms=list(ctx.config.ingest.hashes), camera_tz=tz)
        loop = asyncio.get_running_loop()
        manifest = build_manifest(facts, verified)
        try:
            digest = await loop.run_in_executor(ctx.executor, write_manifest, self._session_dir, manifest)
        except VaultFullError as exc:
            raise SessionAbort("failed", "证据库空间不足", f"vault full writing the manifest: {exc}",
                               vault_full=True) from None
        await ctx.catalog.call(cat.set_state, self.session_id, "committing")
        await ctx.catalog.call(cat.commit, self.session_id, manifest_sha256=digest,
                               camera_newest=camera_newest, clock_drift_s=drift, snapshot=None,
                               camera_tz=tz)
        snapshot = await loop.run_in_executor(ctx.executor, ctx.vault.seal, self._session_dir,
                                              self.session_id)
        await ctx.catalog.call(cat.record_snapshot, self.session_id, snapshot)

    async def _clock_sync_and_wipe(self, profile: CameraProfile) -> None:
        """Write the clock file and wipe per policy; a failure here loses nothing, so it only warns."""
        assert self._volume is not None and self.session_id is not None
        ctx = self.ctx
        wipe = ctx.config.ingest.wipe == "after-verify" and not self._problems
        if profile.clock_sync is None and not wipe:
            return
        try:
            self._volume = await remount(self._volume, writable=True)
        except MountError as exc:
            self._warnings.append(f"clock sync and wipe skipped: cannot write to camera: {exc}")
            return
        loop = asyncio.get_running_loop()
        if profile.clock_sync is not None:
            self._tile("clock-sync")
            await ctx.catalog.call(cat.set_state, self.session_id, "clock-sync")
            try:
                written = await loop.run_in_executor(ctx.executor, write_clock_file, self._volume.path,
                                                     profile, utcnow().astimezone(ZoneInfo(ctx.config.station.timezone)))
                await ctx.catalog.call(cat.record_clock_sync, self.session_id, written)
            except OSError as exc:
                self._warnings.append(f"clock file not written: {exc.strerror or exc}")
        if wipe:
            self._tile("wiping")
            await ctx.catalog.call(cat.set_state, self.session_id, "wiping")
            committed = await ctx.catalog.call(cat.committed_files, self.session_id)
            targets = [CameraFile(f.rel_path_raw, f.size, f.mtime_ns) for f in committed]
            deleted, kept = await loop.run_in_executor(ctx.executor, wipe_files, self._volume.path, targets)
            await ctx.catalog.call(cat.record_wipe, self.session_id, [display_path(d) for d in deleted],
                                   [f"{display_path(p)}: {why}" for p, why in kept])

    # -- ending ----------------------------------------------------------------------

    async def _finish(self, state: str, reason_zh: str, reason_en: str, vault_full: bool) -> None:
        ctx = self.ctx
        if self._volume is not None:
            try:
                await unmount_volume(self._volume)
            except Exception:
                log.exception("slot %s: unmount failed", self.slot)
            self._volume = None
        if self.session_id is not None:
            try:
                await asyncio.shield(ctx.catalog.call(cat.set_state, self.session_id, state,
                                                      reason_en or None))
            except Exception:
                log.exception("slot %s: could not record the end of session %s", self.slot, self.session_id)
        if state != "done" and self.session_id is not None:
            await asyncio.get_running_loop().run_in_executor(ctx.executor, remove_partials,
                                                             self._session_dir)
        if self.quarantined and state == "done":
            reason_zh, reason_en = "未登记的记录仪：已隔离保存，未清理", "unknown camera: quarantined, not wiped"
        seconds = time.monotonic() - self._started
        self._tile(state, message_zh=reason_zh, message_en=reason_en,
                   bytes_done=self._bytes_done if state != "done" else ctx.board.get(self.slot).bytes_total)
        ctx.bus.publish(SessionFinished(self.session_id or "", state, reason_en or None, seconds,
                                        self._bytes_done, self.quarantined, vault_full))
        log.info("slot %s: session %s %s %s", self.slot, self.session_id, state, reason_en)

    # -- helpers ---------------------------------------------------------------------

    def _mount_point(self) -> Path:
        return self.ctx.config.dock.mount_root / f"slot-{self.slot.replace(':', '_').replace('/', '_')}"

    def _tile(self, state: str | None, **changes: object) -> None:
        if state is not None:
            changes["state"] = state
        self.ctx.board.update(self.slot, **changes)


__all__ = ["IngestContext", "IngestSession", "ApplianceError"]
