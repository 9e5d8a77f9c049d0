"""Turning kernel uevents into DockEvents, with pyudev on the event loop.

The netlink monitor is started *before* the initial enumeration, so a camera plugged in
during start-up is seen either way; duplicates are dropped by device node. A udev event
is only a hint: what counts is a USB block device that carries a file system (a
partition, or a whole disk without a partition table, as many cameras present it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import pyudev

from appliance.dock.events import DockAction, DockEvent, SourceKind
from appliance.dock.slots import SlotMap

log = logging.getLogger(__name__)

FS_TYPES = {"vfat", "exfat", "msdos", "ntfs", "ext4"}


def is_camera_volume(device: pyudev.Device) -> bool:
    """A USB block device with a file system on it."""
    props = device.properties
    return (props.get("ID_BUS") == "usb"
            and props.get("ID_FS_USAGE") == "filesystem"
            and props.get("DEVTYPE") in ("partition", "disk"))


def to_event(device: pyudev.Device, action: DockAction, slots: SlotMap) -> DockEvent:
    """The DockEvent for a udev block device."""
    props = device.properties
    port = props.get("ID_PATH", "")
    return DockEvent(
        action=action, slot=slots.slot_for(port), port_path=port, source=Path(device.device_node),
        kind=SourceKind.BLOCK, serial=props.get("ID_SERIAL_SHORT") or props.get("ID_SERIAL"),
        vendor=props.get("ID_VENDOR"), model=props.get("ID_MODEL"), fs_type=props.get("ID_FS_TYPE"))


class UdevWatcher:
    """Feeds DockEvents for USB camera volumes to ``emit``."""

    def __init__(self, slots: SlotMap, emit: Callable[[DockEvent], None]) -> None:
        self._slots = slots
        self._emit = emit
        self._context = pyudev.Context()
        self._monitor = pyudev.Monitor.from_netlink(self._context)
        self._monitor.filter_by("block")
        self._present: dict[str, DockEvent] = {}

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Begin listening, then report what is already plugged in."""
        self._monitor.start()
        loop.add_reader(self._monitor.fileno(), self._drain)
        for device in self._context.list_devices(subsystem="block"):
            if is_camera_volume(device):
                self._add(device)

    def stop(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.remove_reader(self._monitor.fileno())

    def _drain(self) -> None:
        while True:
            try:
                device = self._monitor.poll(timeout=0)
            except Exception:
                log.exception("udev monitor read failed")
                return
            if device is None:
                return
            if device.action in ("add", "change") and is_camera_volume(device):
                self._add(device)
            elif device.action == "remove" and device.device_node in self._present:
                event = self._present.pop(device.device_node)
                self._emit(DockEvent(DockAction.REMOVE, event.slot, event.port_path, event.source,
                                     event.kind, event.serial))

    def _add(self, device: pyudev.Device) -> None:
        if device.device_node in self._present:
            return
        event = to_event(device, DockAction.ADD, self._slots)
        self._present[device.device_node] = event
        log.info("docked: %s on port %s (slot %s), serial %s", event.source, event.port_path,
                 event.slot, event.serial)
        self._emit(event)
