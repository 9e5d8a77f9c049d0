"""The burner's data: what the catalog hands in, and what each stage hands back.

Plain frozen dataclasses, no behaviour beyond derived properties, so the catalog, the web
page, the metrics and the audit log can all pass them around. The burner never reads the
catalog itself: the caller builds :class:`DiscRecording` and :class:`RecordSession`
objects from its rows.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from appliance.burner.media import Medium

# --- inputs (from the catalog) -----------------------------------------------------------


@dataclass(frozen=True)
class DiscRecording:
    """One recording to put on a disc, as the catalog knows it.

    ``vault_path`` is the absolute path of the file in the vault; ``disc_path`` the relative
    path wanted on the disc (``"<session>/<original relative path>"``), Chinese allowed;
    ``size`` and ``sha256`` are the catalogued facts the file is checked against while the
    image is written.
    """

    recording_id: int
    session_id: str
    vault_path: Path
    disc_path: str
    size: int
    sha256: str
    officer: str = ""
    device_serial: str = ""
    device_brand: str = ""
    device_model: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None
    duration_s: float | None = None
    format: str | None = None  # e.g. "MP4 H.264 1920x1080"


@dataclass(frozen=True)
class RecordSession:
    """The facts of article 15.2 for one recording session (one docking of one camera,
    or whatever unit the catalog groups recordings by).

    Everything the catalog does not know is ``None`` and is printed as a blank line to be
    filled in by hand; nothing is ever invented. Start and end time, devices, format and
    length come from the recordings themselves unless given here.
    """

    session_id: str
    officers: tuple[str, ...] = ()          # 执法人员姓名
    camera_operator: str | None = None      # 摄录人员姓名
    place: str | None = None                # 地点
    case_number: str | None = None          # 案件编号
    case_name: str | None = None            # 案件名称
    start_time: datetime | None = None      # overrides the recordings' earliest start
    end_time: datetime | None = None        # overrides the recordings' latest end
    notes: str | None = None                # 备注

    @classmethod
    def blank(cls, session_id: str) -> "RecordSession":
        """A session of which the catalog knows nothing yet: every field left blank."""
        return cls(session_id=session_id)


# --- planning ------------------------------------------------------------------------------

_VOLID_BAD = re.compile(r"[^A-Z0-9_]")


@dataclass(frozen=True)
class DiscLabel:
    """``<station>-<year>-<serial>-<n>/<m>``: disc ``n`` of a set of ``m``."""

    station: str
    year: int
    serial: int
    index: int
    count: int

    @property
    def set_id(self) -> str:
        return f"{self.station}-{self.year}-{self.serial:04d}"

    @property
    def text(self) -> str:
        return f"{self.set_id}-{self.index}/{self.count}"

    @property
    def file_stem(self) -> str:
        """For file names, where ``/`` cannot be used: ``demo-2024-0007-1of3``."""
        return f"{self.set_id}-{self.index}of{self.count}"

    @property
    def volume_id(self) -> str:
        """The volume identifier: at most 16 of ``A-Z 0-9 _`` (Joliet holds 16 UCS-2
        characters, and pycdlib uses one identifier for ISO 9660, Joliet and UDF):
        ``DEMO_240007_1`` for disc 1 of set 0007 of 2024 of station ``demo``."""
        tail = f"_{self.year % 100:02d}{self.serial:04d}_{self.index}"
        station = _VOLID_BAD.sub("_", self.station.upper())[: max(0, 16 - len(tail))]
        return (station + tail)[-16:] if len(station + tail) > 16 else station + tail

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class PlannedDisc:
    """One disc of a plan: which recordings, on which medium, under which label.

    ``session_discs`` tells, for every session with recordings on this disc, on which
    discs of the set (by index) its recordings are, so that a form can say "continued on
    disc 2/3". ``estimated_bytes`` is the planner's estimate of the image size.
    """

    label: DiscLabel
    medium: Medium
    recordings: tuple[DiscRecording, ...]
    session_discs: tuple[tuple[str, tuple[int, ...]], ...] = ()
    estimated_bytes: int = 0

    @property
    def payload_bytes(self) -> int:
        return sum(r.size for r in self.recordings)

    @property
    def session_ids(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for r in self.recordings:
            seen.setdefault(r.session_id, None)
        return tuple(seen)

    def discs_of_session(self, session_id: str) -> tuple[int, ...]:
        return dict(self.session_discs).get(session_id, (self.label.index,))


@dataclass(frozen=True)
class DiscPlan:
    """A selection packed onto a set of discs.

    ``lower_bound`` is ``ceil(total / usable capacity)``: no plan can use fewer discs.
    ``split_sessions`` lists sessions that did not fit on one disc (or whose keeping
    together would have cost a disc) and are spread over several.
    """

    set_id: str
    medium: Medium
    discs: tuple[PlannedDisc, ...]
    lower_bound: int
    split_sessions: tuple[str, ...] = ()

    @property
    def labels(self) -> list[str]:
        return [d.label.text for d in self.discs]

    @property
    def total_bytes(self) -> int:
        return sum(d.payload_bytes for d in self.discs)


# --- image ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageResult:
    """A finished image: where it is, how big, its SHA-256 (computed while writing), and
    the manifest that is on it."""

    path: Path
    label: DiscLabel
    size: int
    sha256: str
    volume_id: str
    manifest: Mapping[str, object]
    joliet_names: Mapping[str, str]
    files: int
    seconds: float
    reread_bytes: int = 0  # bytes the hasher had to read back (0 on the fast path)


# --- drives --------------------------------------------------------------------------------

BurnPhase = Literal["checking", "ready", "writing", "closing", "written",
                    "verifying", "verified", "ejected"]


@dataclass(frozen=True)
class BurnProgress:
    """One progress event of a burn or a read-back, for the web page and the metrics."""

    drive: str
    phase: BurnPhase
    done_bytes: int = 0
    total_bytes: int = 0
    speed: str | None = None      # as the drive reports it, e.g. "8.0x"
    message: str = ""

    @property
    def fraction(self) -> float:
        return min(1.0, self.done_bytes / self.total_bytes) if self.total_bytes else 0.0


@dataclass(frozen=True)
class DriveStatus:
    """What a drive says about the disc it holds (``xorriso -toc``)."""

    drive: str
    pseudo: bool
    media: str                    # "BD-R sequential recording", "stdio file", "no media"...
    status: str                   # "is blank", "is written , is appendable", ...
    blank: bool
    free_sectors: int | None
    medium: Medium | None         # the known medium, with the drive's capacity
    vendor: str = ""
    product: str = ""

    @property
    def free_bytes(self) -> int | None:
        return None if self.free_sectors is None else self.free_sectors * 2048


@dataclass(frozen=True)
class FileCheck:
    path: str
    expected_sha256: str
    actual_sha256: str | None     # None: missing, or size differs
    expected_size: int
    actual_size: int | None

    @property
    def ok(self) -> bool:
        return self.actual_sha256 == self.expected_sha256 and self.actual_size == self.expected_size


@dataclass(frozen=True)
class DiscVerifyReport:
    """A disc (or image) checked file by file against its own ``MANIFEST.json``."""

    source: str
    label: str
    set_id: str
    audit_chain_head: str | None
    checked: tuple[FileCheck, ...] = ()
    unexpected: tuple[str, ...] = ()   # files on the disc the manifest does not list
    problems: tuple[str, ...] = ()     # anything else (SHA256SUMS disagreeing, ...)

    @property
    def failed(self) -> list[FileCheck]:
        return [c for c in self.checked if not c.ok]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.problems and not self.unexpected


__all__ = [
    "BurnPhase", "BurnProgress", "DiscLabel", "DiscPlan", "DiscRecording", "DiscVerifyReport",
    "DriveStatus", "FileCheck", "ImageResult", "PlannedDisc", "RecordSession",
]
