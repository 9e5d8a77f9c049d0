"""What the dock layer tells the rest of the appliance: a camera came or went."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path


class DockAction(str, Enum):
    ADD = "add"
    REMOVE = "remove"


class SourceKind(str, Enum):
    """What ``DockEvent.source`` points at."""

    BLOCK = "block"  # a block device node (/dev/sdb1, /dev/sdc): production
    IMAGE = "image"  # a file system image (demo, tests, a card dumped to a file)
    DIRECTORY = "directory"  # an already-mounted folder (last resort of the demo)


@dataclass(frozen=True)
class DockEvent:
    """A camera file system appeared on (or vanished from) a dock slot.

    ``slot`` is None when the USB port is not in the slot map; the board then shows the
    docking on a spare tile named after the port instead of dropping it.
    """

    action: DockAction
    slot: int | None
    port_path: str
    source: Path
    kind: SourceKind = SourceKind.BLOCK
    serial: str | None = None
    vendor: str | None = None
    model: str | None = None
    fs_type: str | None = None
    extra: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def slot_key(self) -> str:
        """A stable name for the tile this docking is shown on."""
        return str(self.slot) if self.slot is not None else f"port:{self.port_path}"
