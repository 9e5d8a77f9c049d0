"""Disc planning: pack a selection of recordings onto as few discs as possible.

Rules, in order of importance:

1. every recording stays whole and lands on exactly one disc; a recording larger than the
   medium is refused, naming a medium that would hold it;
2. as few discs as possible;
3. the recordings of one session stay on one disc where that costs no extra disc.

Bin packing is NP-hard, so the planner runs a few classic heuristics (first-fit and
best-fit decreasing over recordings, and first-fit decreasing over whole sessions) and
keeps the plan with the fewest discs, then the fewest split sessions. First-fit
decreasing alone guarantees at most 11/9 of the optimum plus one; in practice, with
recordings small against a disc, the plans are within one disc of the lower bound.

The cost of a recording is an estimate of what it takes in the image: its data rounded
up to whole sectors, plus its directory records, UDF file entry, manifest and form lines.
A fixed reserve per disc covers the file system, the manifest, the forms and the index.
The image builder checks the real size against the medium at the end.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone

from appliance.burner.errors import PlanError, RecordingTooLarge
from appliance.burner.layout import DiscLayout
from appliance.burner.media import SECTOR, Medium, human_bytes, larger_media
from appliance.burner.model import DiscLabel, DiscPlan, DiscRecording, PlannedDisc

#: Per disc: system area, volume descriptors, UDF anchors, the record form (PDF with a
#: font subset), the HTML pages, README and the top of the manifest.
DISC_RESERVE = 8 << 20
#: Per recording: directory records (ISO 9660 + Rock Ridge, Joliet, UDF file identifier),
#: one UDF file entry sector, the sector rounding, and its lines in the manifest, the
#: SHA256SUMS, the forms and the index page.
PER_RECORDING = 16 << 10
#: Per directory: its ISO 9660, Joliet and UDF directory extents and UDF file entry;
#: counted once per recording, as if each brought a new folder (the margin covers deeper).
PER_DIRECTORY = 8 << 10


def recording_cost(rec: DiscRecording) -> int:
    """Bytes a recording takes in an image, as the planner counts it."""
    return math.ceil(rec.size / SECTOR) * SECTOR + PER_RECORDING + PER_DIRECTORY


def disc_capacity(medium: Medium) -> int:
    """Bytes the planner fills with recordings on one disc of ``medium``."""
    return max(0, medium.usable - DISC_RESERVE)


def lower_bound(costs: Sequence[int], capacity: int) -> int:
    """A lower bound on the number of discs any packing needs.

    The larger of ``ceil(total / capacity)`` and, for every k, the number of items larger
    than ``capacity / (k + 1)`` divided by k (at most k of them fit on one disc).
    """
    if not costs:
        return 0
    bound = math.ceil(sum(costs) / capacity)
    ordered = sorted(costs, reverse=True)
    for k in range(1, min(len(ordered), 64) + 1):
        # items strictly larger than capacity / (k + 1): no k + 1 of them share a disc
        n = sum(1 for c in ordered if c * (k + 1) > capacity)
        bound = max(bound, math.ceil(n / k))
    return bound


def check_paths(recordings: Iterable[DiscRecording]) -> None:
    """Every path is one a disc can hold, and no two recordings want the same place, so a
    dry run already shows what the build would refuse."""
    layout = DiscLayout()
    for rec in recordings:
        layout.add(rec.disc_path, owner=f"recording {rec.recording_id}")


def check_fits(recordings: Iterable[DiscRecording], medium: Medium) -> None:
    """Refuse any recording that cannot fit on an empty disc of ``medium``, naming a
    medium that would hold it."""
    capacity = disc_capacity(medium)
    for rec in recordings:
        cost = recording_cost(rec)
        if cost <= capacity:
            continue
        bigger = larger_media(medium, cost + DISC_RESERVE)
        hint = (f"use {bigger[0].name} or larger (--media {bigger[0].key})" if bigger
                else "no supported medium holds it")
        raise RecordingTooLarge(
            f"recording {rec.recording_id} ({rec.disc_path}) is {human_bytes(rec.size)}, "
            f"more than one {medium.describe()} holds; {hint}")


def plan_discs(
    recordings: Sequence[DiscRecording],
    medium: Medium,
    *,
    station: str,
    serial: int,
    year: int | None = None,
) -> DiscPlan:
    """Pack ``recordings`` onto discs of ``medium`` and label them
    ``<station>-<year>-<serial>-<n>/<m>``.

    Raises :class:`RecordingTooLarge` for a recording that fits on no disc of ``medium``
    and :class:`PlanError` for an empty selection or a recording listed twice.
    """
    if not recordings:
        raise PlanError("nothing selected")
    ids = [r.recording_id for r in recordings]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        raise PlanError(f"recordings listed twice: {dupes}")
    check_paths(recordings)
    check_fits(recordings, medium)
    capacity = disc_capacity(medium)
    year = year if year is not None else datetime.now(timezone.utc).year

    candidates = [
        _pack_sessions_first(recordings, capacity),
        _pack_items(recordings, capacity, _first_fit),
        _pack_items(recordings, capacity, _best_fit),
    ]
    bins = min(candidates, key=lambda b: (len(b), len(_split_sessions(b))))
    bins = _order_discs(bins)

    count = len(bins)
    where: dict[str, list[int]] = defaultdict(list)
    for index, content in enumerate(bins, start=1):
        for sid in dict.fromkeys(r.session_id for r in content):
            where[sid].append(index)

    discs = []
    for index, content in enumerate(bins, start=1):
        content = _order_recordings(content)
        sids = list(dict.fromkeys(r.session_id for r in content))
        discs.append(PlannedDisc(
            label=DiscLabel(station=station, year=year, serial=serial, index=index, count=count),
            medium=medium,
            recordings=tuple(content),
            session_discs=tuple((sid, tuple(where[sid])) for sid in sids),
            estimated_bytes=DISC_RESERVE + sum(recording_cost(r) for r in content),
        ))
    label0 = discs[0].label
    return DiscPlan(
        set_id=label0.set_id,
        medium=medium,
        discs=tuple(discs),
        lower_bound=lower_bound([recording_cost(r) for r in recordings], capacity),
        split_sessions=tuple(sorted(sid for sid, idx in where.items() if len(idx) > 1)),
    )


# --- packing heuristics ---------------------------------------------------------------

Bin = list[DiscRecording]
_Chooser = Callable[[list[int], int], int | None]


def _first_fit(free: list[int], cost: int) -> int | None:
    for i, room in enumerate(free):
        if room >= cost:
            return i
    return None


def _best_fit(free: list[int], cost: int) -> int | None:
    best = None
    for i, room in enumerate(free):
        if room >= cost and (best is None or room < free[best]):
            best = i
    return best


def _sort_key(rec: DiscRecording) -> tuple:
    # decreasing cost; ties by session and id so equal sizes of one session stay adjacent
    return (-recording_cost(rec), rec.session_id, rec.recording_id)


def _pack_items(recordings: Sequence[DiscRecording], capacity: int, choose: _Chooser) -> list[Bin]:
    bins: list[Bin] = []
    free: list[int] = []
    for rec in sorted(recordings, key=_sort_key):
        cost = recording_cost(rec)
        i = choose(free, cost)
        if i is None:
            bins.append([])
            free.append(capacity)
            i = len(bins) - 1
        bins[i].append(rec)
        free[i] -= cost
    return bins


def _pack_sessions_first(recordings: Sequence[DiscRecording], capacity: int) -> list[Bin]:
    """First-fit decreasing over whole sessions; a session larger than a disc is packed
    on its own discs first (first-fit decreasing over its recordings), and what room its
    last disc has left is open to the others."""
    sessions: dict[str, list[DiscRecording]] = defaultdict(list)
    for rec in recordings:
        sessions[rec.session_id].append(rec)
    cost = {sid: sum(recording_cost(r) for r in recs) for sid, recs in sessions.items()}
    bins: list[Bin] = []
    free: list[int] = []
    for sid in sorted(sessions, key=lambda s: (-cost[s], s)):
        recs = sessions[sid]
        if cost[sid] <= capacity:
            i = _first_fit(free, cost[sid])
            if i is None:
                bins.append([])
                free.append(capacity)
                i = len(bins) - 1
            bins[i].extend(recs)
            free[i] -= cost[sid]
            continue
        own = _pack_items(recs, capacity, _first_fit)
        for content in own:
            bins.append(content)
            free.append(capacity - sum(recording_cost(r) for r in content))
    return bins


def _split_sessions(bins: list[Bin]) -> set[str]:
    seen: dict[str, int] = {}
    split: set[str] = set()
    for i, content in enumerate(bins):
        for rec in content:
            if seen.setdefault(rec.session_id, i) != i:
                split.add(rec.session_id)
    return split


def _when(rec: DiscRecording) -> tuple:
    t = rec.start_time
    stamp = t.timestamp() if t is not None and t.tzinfo is not None else (
        t.replace(tzinfo=timezone.utc).timestamp() if t is not None else math.inf)
    return (stamp, rec.recording_id)


def _order_discs(bins: list[Bin]) -> list[Bin]:
    """Discs in the order of their earliest session, so a set reads chronologically."""
    first_of_session: dict[str, tuple] = {}
    for content in bins:
        for rec in content:
            w = _when(rec)
            if rec.session_id not in first_of_session or w < first_of_session[rec.session_id]:
                first_of_session[rec.session_id] = w
    return sorted(bins, key=lambda content: min(
        (first_of_session[r.session_id], r.session_id) for r in content))


def _order_recordings(content: Bin) -> Bin:
    first: dict[str, tuple] = {}
    for rec in content:
        w = _when(rec)
        if rec.session_id not in first or w < first[rec.session_id]:
            first[rec.session_id] = w
    return sorted(content, key=lambda r: (first[r.session_id], r.session_id, _when(r), r.disc_path))

