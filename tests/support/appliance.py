"""A real appliance in the test's process: directory vault in tmp_path, no udev, no web port."""

from __future__ import annotations

import asyncio
from pathlib import Path

from appliance.catalog import registry
from appliance.config import parse_config
from appliance.daemon import Appliance
from appliance.dock.events import DockAction, DockEvent, SourceKind
from appliance.metrics import SessionFinished


def make_config(root: Path, **sections: dict):
    """A config for ``root`` with four slots; ``sections`` override top-level sections."""
    data = {
        "state_dir": str(root / "state"),
        "vault": {"backend": "directory", "path": str(root / "vault"), "reserve": 0},
        "dock": {"slots": {i: f"test-port-{i}" for i in range(1, 5)}, "mount_root": str(root / "mnt"),
                 "udev": False, "block_size": "1MiB"},
        "ingest": {"ffprobe": False},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return parse_config(data)


class Harness:
    """Dock sources and wait for the sessions' results."""

    def __init__(self, appliance: Appliance) -> None:
        self.appliance = appliance
        self.finished: list[SessionFinished] = []
        appliance.bus.subscribe(lambda e: self.finished.append(e) if isinstance(e, SessionFinished) else None)

    @property
    def catalog(self):
        return self.appliance.catalog

    def register(self, serial: str, officer: str = "张伟") -> None:
        self.catalog.run(registry.add_device, serial, officer=officer, model="DSJ-T")

    def dock(self, slot: int, source: Path, kind: SourceKind = SourceKind.DIRECTORY,
             serial: str | None = None) -> None:
        self.appliance.dock(DockEvent(DockAction.ADD, slot, f"test-port-{slot}", source, kind, serial=serial))

    def undock(self, slot: int) -> None:
        self.appliance.dock(DockEvent(DockAction.REMOVE, slot, f"test-port-{slot}", Path("/"),
                                      SourceKind.DIRECTORY))

    async def ingest(self, slot: int, source: Path, kind: SourceKind = SourceKind.DIRECTORY,
                     serial: str | None = None, timeout: float = 120) -> SessionFinished:
        """Dock, wait for the session to end, undock; return how it ended."""
        before = len(self.finished)
        self.dock(slot, source, kind, serial)
        await asyncio.sleep(0)
        await asyncio.wait_for(self.appliance.wait_idle(), timeout)
        self.undock(slot)
        assert len(self.finished) == before + 1, self.finished
        return self.finished[-1]

    def rows(self, sql: str, *args):
        return self.catalog.run(lambda c: [dict(r) for r in c.execute(sql, args).fetchall()])
