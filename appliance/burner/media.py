"""Optical media: what each kind of blank disc holds, in 2048-byte sectors.

The capacities are the real recordable sector counts that drives report for blank
media (the same numbers ``xorriso -toc`` prints as "Media blocks ... writable"), not the
marketing sizes. A planner must not fill a disc to the last sector: the image's own
metadata grows with the number of files, drives differ by a few sectors, and a DVD-R is
a little larger than a DVD+R. So every medium keeps a safety margin, and the usable
capacity is what the planner fills.

When a real drive reports the medium it holds, its reported capacity wins over the table
(:meth:`Medium.with_reported_capacity`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from appliance.burner.errors import UnknownMedium

SECTOR = 2048

#: The safety margin: 1 % of the disc, at least 8 MiB (4096 sectors).
MARGIN_FRACTION = 0.01
MARGIN_MIN_SECTORS = 4096


@dataclass(frozen=True)
class Medium:
    """One kind of recordable disc.

    ``key`` is what the configuration and the command line use (``dvd``, ``bd25``...);
    ``name`` is what people read; ``sectors`` is the recordable capacity of a blank disc;
    ``profiles`` are the MMC profile names a drive reports for it (as xorriso prints them
    after "Media current:").
    """

    key: str
    name: str
    sectors: int
    profiles: tuple[str, ...] = ()
    reported: bool = False

    @property
    def capacity(self) -> int:
        """Bytes a blank disc of this kind can record."""
        return self.sectors * SECTOR

    @property
    def margin_sectors(self) -> int:
        return max(MARGIN_MIN_SECTORS, int(self.sectors * MARGIN_FRACTION))

    @property
    def usable(self) -> int:
        """Bytes the planner may fill: capacity minus the safety margin."""
        return max(0, self.sectors - self.margin_sectors) * SECTOR

    def with_reported_capacity(self, sectors: int) -> "Medium":
        """The same medium with the capacity a drive reported for the disc it holds."""
        return replace(self, sectors=sectors, reported=True)

    def describe(self) -> str:
        return f"{self.name} ({human_bytes(self.capacity)}, usable {human_bytes(self.usable)})"

    def __str__(self) -> str:
        return self.name


# Sector counts: CD-R 80 min (ATIP lead-out 79:59:74, 359,846 data sectors);
# DVD+R 2,295,104 (DVD-R holds 2,298,496, so DVD+R is the one both fit);
# DVD+R DL 4,173,824; BD-R SL 12,219,392; BD-R DL 24,438,784; BD-R XL TL 48,878,592
# (all BD-R figures without spare areas, i.e. written unformatted as xorriso does).
MEDIA: dict[str, Medium] = {m.key: m for m in (
    Medium("cd", "CD-R 700MB", 359_846, ("CD-R", "CD-RW")),
    Medium("dvd", "DVD±R 4.7GB", 2_295_104,
           ("DVD-R sequential recording", "DVD+R", "DVD-RW sequential recording",
            "DVD-RW restricted overwrite", "DVD+RW", "DVD-RAM")),
    Medium("dvd-dl", "DVD+R DL 8.5GB", 4_173_824,
           ("DVD+R/DL", "DVD-R/DL sequential recording", "DVD-R/DL layer jump recording")),
    Medium("bd25", "BD-R 25GB", 12_219_392, ("BD-R sequential recording", "BD-R random recording", "BD-RE")),
    Medium("bd50", "BD-R 50GB", 24_438_784, ()),
    Medium("bd100", "BD-R XL 100GB", 48_878_592, ()),
)}

#: Smallest first: the order in which a larger medium is suggested.
BY_SIZE: tuple[Medium, ...] = tuple(sorted(MEDIA.values(), key=lambda m: m.sectors))

_ALIASES = {
    "cd-r": "cd", "cdr": "cd", "dvd+r": "dvd", "dvd-r": "dvd", "dvd±r": "dvd", "dvd5": "dvd",
    "dvd+r-dl": "dvd-dl", "dvd9": "dvd-dl", "dvddl": "dvd-dl", "bd": "bd25", "bd-r": "bd25",
    "bd-r25": "bd25", "bd-r50": "bd50", "bd-dl": "bd50", "bdxl": "bd100", "bd-xl": "bd100",
    "bd-r100": "bd100",
}


def medium(key: str) -> Medium:
    """The medium named ``key`` (``cd``, ``dvd``, ``dvd-dl``, ``bd25``, ``bd50``, ``bd100``
    or a common alias such as ``bd-r``); :class:`UnknownMedium` otherwise."""
    k = key.strip().lower()
    k = _ALIASES.get(k, k)
    try:
        return MEDIA[k]
    except KeyError:
        raise UnknownMedium(f"{key!r}; known: {', '.join(MEDIA)}") from None


def larger_media(than: Medium, needed_bytes: int) -> list[Medium]:
    """Media whose usable capacity holds ``needed_bytes``, smallest first."""
    return [m for m in BY_SIZE if m.usable >= needed_bytes and m.sectors > than.sectors]


def from_drive_profile(profile: str, free_sectors: int | None) -> Medium | None:
    """The medium a real drive reports ("BD-R sequential recording", "DVD+R"...), with the
    drive's capacity when it reported one. ``None`` for anything not recordable here.

    A BD-R profile does not say whether the disc is single, dual or triple layer; the
    reported capacity does, so the key is chosen from it.
    """
    p = profile.strip()
    for m in BY_SIZE:
        if p in m.profiles:
            if m.key == "bd25" and free_sectors:
                m = _bd_by_capacity(free_sectors)
            return m.with_reported_capacity(free_sectors) if free_sectors else m
    return None


def _bd_by_capacity(sectors: int) -> Medium:
    for key in ("bd25", "bd50", "bd100"):
        if sectors <= MEDIA[key].sectors:
            return MEDIA[key]
    return MEDIA["bd100"]


def human_bytes(n: int) -> str:
    """``4.7 GB`` style, decimal units as printed on discs."""
    for unit, size in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"
