"""``appliance demo``: the appliance on its embedded default, with simulated cameras.

Everything a newcomer needs to see the box work without dock hardware: a directory
vault and SQLite in a state folder, FAT32 camera images with real MP4 clips and Chinese
file names, mounted the way this machine allows, and docked on distinct slots through
the same path a real udev event takes.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from appliance.catalog import registry
from appliance.config import Config, load_config
from appliance.daemon import Appliance
from appliance.demo.cameras import CameraSpec, build_camera_dir, build_camera_image
from appliance.dock.events import DockAction, DockEvent, SourceKind
from appliance.dock.mount import MountError, mount_volume, unmount_volume
from appliance.metrics import SessionFinished

log = logging.getLogger(__name__)

OFFICERS = ["张伟", "李娜", "王强", "刘洋", "陈静", "杨帆", "赵磊", "黄敏"]
REDOCK_INTERVAL_S = 8


@dataclass
class SlotResult:
    slot: str
    session_id: str
    state: str
    reason: str | None
    files: int
    bytes: int
    seconds: float


def write_demo_config(state: Path, cameras: int, port: int, base: Config | None = None) -> Path:
    """A config.yaml in the state folder that later commands can use (--config).

    With ``base``, its station, ingest settings and camera profiles are kept; where the
    evidence goes, the web port and the slots are the demo's own.
    """
    kept = base.model_dump(mode="json", include={"station", "ingest", "profiles"}) if base else {}
    config = {
        "station": {"id": "demo", "name": "演示执法站"},
        "state_dir": "state",
        "vault": {"backend": "directory", "path": "vault", "reserve": "64MiB"},
        "web": {"host": "127.0.0.1", "port": port},
        "dock": {"slots": {i: f"demo-port-{i}" for i in range(1, cameras + 1)},
                 "mount_root": "mnt", "udev": False},
        "ingest": {"wipe": "after-verify"},
    }
    config.update(kept)
    path = state / "config.yaml"
    path.write_text("# Written by `appliance demo`.\n" + yaml.safe_dump(config, allow_unicode=True),
                    encoding="utf-8")
    return path


async def _source_kind(probe_image: Path, scratch: Path) -> SourceKind:
    """Image files where this machine can mount FAT (kernel or FUSE); plain folders otherwise."""
    try:
        vol = await mount_volume(probe_image, scratch)
    except MountError as exc:
        log.warning("cannot mount FAT images here (%s); the demo uses plain folders", exc)
        return SourceKind.DIRECTORY
    await unmount_volume(vol)
    return SourceKind.IMAGE


async def run_demo(cameras: int = 3, once: bool = False, state: Path | None = None,
                   port: int = 8080, base: Config | None = None) -> int:
    """Run the demo; with ``once``, return 0 only if every file verified."""
    keep = state is not None
    state = state or Path(tempfile.mkdtemp(prefix="appliance-demo-", dir="/var/tmp"))
    state.mkdir(parents=True, exist_ok=True)
    config = load_config(write_demo_config(state, cameras, port, base))
    cams = state / "cameras"
    cams.mkdir(exist_ok=True)
    appliance = Appliance(config)
    register_demo_devices(appliance, cameras)
    results: dict[str, SlotResult] = {}
    appliance.bus.subscribe(lambda e: _collect(e, results, appliance))
    try:
        await appliance.start(udev=False)
        print(f"演示运行中 / demo running: http://{config.web.host}:{appliance.bound_port}/api/v1/slots"
              f"  (state: {state})", flush=True)
        generation = 0
        probe = await asyncio.to_thread(build_camera_image, _camera(1, 0), cams / "probe.img",
                                        cams / "clip-cache")
        kind = await _source_kind(probe, config.dock.mount_root / "probe")
        while True:
            specs = [_camera(i, generation) for i in range(1, cameras + 1)]
            sources = await asyncio.to_thread(_build_all, specs, cams, generation, kind)
            for slot, source in enumerate(sources, start=1):
                appliance.dock(DockEvent(DockAction.ADD, slot, f"demo-port-{slot}", source, kind))
            await asyncio.sleep(0.1)
            await appliance.wait_idle()
            if once:
                return _summary(results, config)
            await asyncio.sleep(REDOCK_INTERVAL_S)
            for slot in range(1, cameras + 1):
                appliance.dock(DockEvent(DockAction.REMOVE, slot, f"demo-port-{slot}", Path("/"), kind))
            generation += 1
    finally:
        await appliance.stop()
        if not keep:
            shutil.rmtree(state, ignore_errors=True)


def _camera(slot: int, generation: int) -> CameraSpec:
    serial = f"DSJ{slot:04d}"
    return CameraSpec(serial=serial, officer=OFFICERS[(slot - 1) % len(OFFICERS)], clips=3,
                      clip_seconds=2.0 + generation % 3)


def _build_all(specs: list[CameraSpec], folder: Path, generation: int, kind: SourceKind) -> list[Path]:
    """One camera per slot; the previous generation's images are removed to save space."""
    for old in folder.glob(f"*-{generation - 1}*"):
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    if kind is SourceKind.IMAGE:
        return [build_camera_image(s, folder / f"{s.serial}-{generation}.img", folder / "clip-cache")
                for s in specs]
    return [build_camera_dir(s, folder / f"{s.serial}-{generation}", folder / "clip-cache") for s in specs]


def register_demo_devices(appliance: Appliance, cameras: int) -> None:
    for slot in range(1, cameras + 1):
        spec = _camera(slot, 0)
        appliance.catalog.run(registry.add_device, spec.serial, officer=spec.officer,
                              model="DSJ-demo", brand="演示", actor="demo")


def _collect(event: object, results: dict[str, SlotResult], appliance: Appliance) -> None:
    if isinstance(event, SessionFinished):
        tile = appliance.board.get(_slot_of(event.session_id, appliance))
        results[event.session_id] = SlotResult(tile.slot, event.session_id, event.result,
                                               event.reason, tile.files_done, event.bytes, event.seconds)


def _slot_of(session_id: str, appliance: Appliance) -> str:
    for tile in appliance.board.all():
        if tile.session_id == session_id:
            return tile.slot
    return "?"


def _summary(results: dict[str, SlotResult], config: Config) -> int:
    print(f"{'槽位 slot':<10}{'文件 files':>12}{'字节 bytes':>14}{'MB/s':>9}  {'结果 result'}")
    ok = bool(results)
    for r in sorted(results.values(), key=lambda r: r.slot):
        rate = r.bytes / r.seconds / 1e6 if r.seconds else 0.0
        verified = r.state == "done"
        ok &= verified
        word = "已校验 verified" if verified else f"{r.state}: {r.reason}"
        print(f"{r.slot:<10}{r.files:>12}{r.bytes:>14}{rate:>9.1f}  {word}")
    print(f"vault: {config.vault.path}")
    sys.stdout.flush()
    return 0 if ok else 1


__all__ = ["run_demo", "write_demo_config", "register_demo_devices"]
