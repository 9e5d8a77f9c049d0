"""The slot board: what every dock slot is doing right now.

Officers read it from three metres away: a state, the officer's name, progress, and a
problem in plain words (Chinese first). It never shows the recordings themselves.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace

from appliance.events import EventBus

# state -> (zh, en) words for the tile
STATE_WORDS: dict[str, tuple[str, str]] = {
    "empty": ("空闲", "empty"),
    "docked": ("已插入", "docked"),
    "identifying": ("识别中", "identifying"),
    "mounting": ("读取中", "mounting"),
    "copying": ("正在复制", "copying"),
    "verifying": ("正在校验", "verifying"),
    "committing": ("正在归档", "committing"),
    "clock-sync": ("校准时钟", "setting clock"),
    "wiping": ("清理记录仪", "wiping camera"),
    "done": ("完成，可以拔出", "done: safe to remove"),
    "failed": ("出现问题", "problem"),
    "interrupted": ("已中断，请重新插入", "interrupted: dock again"),
}
PROBLEM_STATES = ("failed", "interrupted")


@dataclass(frozen=True)
class SlotStatus:
    """One tile of the board."""

    slot: str
    state: str = "empty"
    port_path: str = ""
    serial: str | None = None
    officer: str | None = None
    session_id: str | None = None
    files_total: int = 0
    files_done: int = 0
    bytes_total: int = 0
    bytes_done: int = 0
    rate_bytes_per_s: float = 0.0
    quarantined: bool = False
    message_zh: str = ""
    message_en: str = ""
    updated: float = field(default_factory=time.time)

    @property
    def progress(self) -> float:
        return self.bytes_done / self.bytes_total if self.bytes_total else (1.0 if self.state == "done" else 0.0)

    def to_json(self) -> dict:
        data = asdict(self)
        zh, en = STATE_WORDS.get(self.state, (self.state, self.state))
        data.update(progress=round(self.progress, 4), state_zh=zh, state_en=en)
        return data


@dataclass(frozen=True)
class SlotChanged:
    """Published on the bus whenever a tile changes."""

    status: SlotStatus


class SlotBoard:
    """Tiles for the configured slots, plus spare tiles for unmapped ports."""

    def __init__(self, slots: list[int], bus: EventBus) -> None:
        self._bus = bus
        self._tiles: dict[str, SlotStatus] = {str(s): SlotStatus(str(s)) for s in sorted(slots)}

    def get(self, slot: str) -> SlotStatus:
        return self._tiles.get(slot) or SlotStatus(slot)

    def update(self, slot: str, **changes: object) -> SlotStatus:
        """Change a tile and tell the bus."""
        status = replace(self.get(slot), updated=time.time(), **changes)
        self._tiles[slot] = status
        self._bus.publish(SlotChanged(status))
        return status

    def clear(self, slot: str) -> None:
        """The camera left the slot: the tile is empty again (spare tiles disappear)."""
        if slot.startswith("port:"):
            self._tiles.pop(slot, None)
            self._bus.publish(SlotChanged(SlotStatus(slot)))
        else:
            self.update(slot, **{k: v for k, v in asdict(SlotStatus(slot)).items()
                                 if k not in ("slot", "updated")})

    def all(self) -> list[SlotStatus]:
        return [self._tiles[k] for k in sorted(self._tiles, key=_slot_order)]


def _slot_order(key: str) -> tuple[int, str]:
    return (int(key), "") if key.isdigit() else (1 << 30, key)
