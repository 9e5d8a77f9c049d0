"""The disc planner: whole recordings, few discs, sessions together, clear refusals."""

from __future__ import annotations

import math
import os
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.burner.errors import InvalidDiscPath, PlanError, RecordingTooLarge
from appliance.burner.media import MEDIA, Medium
from appliance.burner.model import DiscRecording
from appliance.burner.plan import disc_capacity, lower_bound, plan_discs, recording_cost

T0 = datetime(2024, 5, 1, tzinfo=timezone.utc)
SMALL = Medium("test", "Test disc", 200_000)        # ~410 MB, keeps the numbers small
CAP = disc_capacity(SMALL)


def rec(i: int, size: int, session: str = "S1", minute: int | None = None) -> DiscRecording:
    return DiscRecording(
        recording_id=i, session_id=session, vault_path=Path(f"/vault/{i}"),
        disc_path=f"{session}/{i:05d}.MP4", size=size, sha256="0" * 64,
        start_time=T0 + timedelta(minutes=i if minute is None else minute))


def check_plan(plan, recordings) -> None:
    placed = Counter(r.recording_id for d in plan.discs for r in d.recordings)
    assert placed == Counter(r.recording_id for r in recordings)          # each exactly once
    for d in plan.discs:
        assert sum(recording_cost(r) for r in d.recordings) <= disc_capacity(d.medium)
        assert d.estimated_bytes <= d.medium.usable
    assert [d.label.index for d in plan.discs] == list(range(1, len(plan.discs) + 1))
    assert all(d.label.count == len(plan.discs) for d in plan.discs)


def test_many_recordings_on_dvds_sessions_kept_together():
    # 40 sessions of 3..12 recordings of 40..400 MB: a realistic month of a station
    recs = []
    i = 0
    for s in range(40):
        for k in range(3 + s % 10):
            i += 1
            recs.append(rec(i, (40 + (i * 37) % 360) * 10**6, f"S{s:03d}"))
    plan = plan_discs(recs, MEDIA["dvd"], station="demo", serial=7, year=2024)
    check_plan(plan, recs)
    assert len(plan.discs) <= plan.lower_bound + 1
    # a session smaller than a disc is split only when keeping it whole would cost a disc
    small = {r.session_id for r in recs} - set(plan.split_sessions)
    assert len(small) >= len({r.session_id for r in recs}) - len(plan.discs)
    for d in plan.discs:
        for sid, discs in d.session_discs:
            assert d.label.index in discs
    assert plan.discs[0].label.text == f"demo-2024-0007-1/{len(plan.discs)}"


def test_sessions_that_fit_are_never_split_when_it_costs_nothing():
    # three sessions of 0.6, 0.3, 0.3 of a disc and one of 0.7: the natural 2 discs are
    # {0.6, 0.3} and {0.7, 0.3} with every session whole
    cap = CAP
    recs = []
    for sid, share, n in (("A", 0.6, 6), ("B", 0.3, 3), ("C", 0.3, 3), ("D", 0.7, 7)):
        for k in range(n):
            recs.append(rec(len(recs) + 1, int(cap * share / n) - 200_000, sid))
    plan = plan_discs(recs, SMALL, station="s", serial=1, year=2024)
    check_plan(plan, recs)
    assert len(plan.discs) == 2
    assert plan.split_sessions == ()
    for d in plan.discs:
        assert len({r.session_id for r in d.recordings}) == 2


def test_session_larger_than_a_disc_spans_discs_and_is_reported():
    recs = [rec(i, int(CAP * 0.3), "BIG", minute=i) for i in range(1, 8)]    # 2.1 discs
    recs += [rec(100, int(CAP * 0.5), "LATE", minute=1000)]
    plan = plan_discs(recs, SMALL, station="s", serial=3, year=2024)
    check_plan(plan, recs)
    assert "BIG" in plan.split_sessions
    assert len(plan.discs) == 3
    big_discs = {d.label.index for d in plan.discs if any(r.session_id == "BIG" for r in d.recordings)}
    assert len(big_discs) == 3
    # the form of each disc can say where the rest of the session is
    assert plan.discs[0].discs_of_session("BIG") == (1, 2, 3)


def test_discs_are_in_chronological_order():
    recs = [rec(1, int(CAP * 0.8), "LATE", minute=500), rec(2, int(CAP * 0.8), "EARLY", minute=1)]
    plan = plan_discs(recs, SMALL, station="s", serial=1, year=2024)
    assert [d.recordings[0].session_id for d in plan.discs] == ["EARLY", "LATE"]


def test_recording_larger_than_the_medium_is_refused_naming_a_larger_one():
    recs = [rec(1, 10**8), rec(2, 5 * 10**9)]
    with pytest.raises(RecordingTooLarge) as err:
        plan_discs(recs, MEDIA["dvd"], station="s", serial=1, year=2024)
    msg = str(err.value)
    assert "recording 2" in msg and "DVD+R DL 8.5GB" in msg and "--media dvd-dl" in msg
    with pytest.raises(RecordingTooLarge, match="no supported medium holds it"):
        plan_discs([rec(3, 120 * 10**9)], MEDIA["bd25"], station="s", serial=1, year=2024)


def test_bad_or_clashing_paths_are_refused_at_planning():
    bad = DiscRecording(recording_id=5, session_id="S", vault_path=Path("/v/5"),
                        disc_path="S/../x.mp4", size=1, sha256="0" * 64)
    with pytest.raises(InvalidDiscPath, match="recording 5"):
        plan_discs([rec(1, 10), bad], SMALL, station="s", serial=1)
    twin = DiscRecording(recording_id=6, session_id="S1", vault_path=Path("/v/6"),
                         disc_path=rec(1, 10).disc_path, size=1, sha256="0" * 64)
    with pytest.raises(InvalidDiscPath, match="recording 6.*already a file"):
        plan_discs([rec(1, 10), twin], SMALL, station="s", serial=1)


def test_empty_and_duplicates_refused():
    with pytest.raises(PlanError, match="nothing selected"):
        plan_discs([], SMALL, station="s", serial=1)
    with pytest.raises(PlanError, match="twice"):
        plan_discs([rec(1, 10), rec(1, 10)], SMALL, station="s", serial=1)


def test_label_and_volume_id():
    plan = plan_discs([rec(1, 10**6)], SMALL, station="nongye-zhifa-zhidui-3", serial=42, year=2025)
    label = plan.discs[0].label
    assert label.text == "nongye-zhifa-zhidui-3-2025-0042-1/1"
    assert label.file_stem == "nongye-zhifa-zhidui-3-2025-0042-1of1"
    assert len(label.volume_id) <= 16 and label.volume_id.endswith("_250042_1")
    assert set(label.volume_id) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


# --- properties ---------------------------------------------------------------------------

def optimum(costs: list[int], capacity: int) -> int:
    """Exact minimum number of discs (branch and bound; small inputs only)."""
    items = sorted(costs, reverse=True)
    best = [len(items)]

    def place(i: int, bins: list[int]) -> None:
        if len(bins) >= best[0]:
            return
        if i == len(items):
            best[0] = len(bins)
            return
        seen = set()
        for b in range(len(bins)):
            if bins[b] + items[i] <= capacity and bins[b] not in seen:
                seen.add(bins[b])
                bins[b] += items[i]
                place(i + 1, bins)
                bins[b] -= items[i]
        bins.append(items[i])
        place(i + 1, bins)
        bins.pop()

    place(0, [])
    return best[0]


# More examples for a deeper search: BURNER_HYPOTHESIS_EXAMPLES=5000 pytest tests/burner/test_plan.py
EXAMPLES = int(os.environ.get("BURNER_HYPOTHESIS_EXAMPLES", "300"))
sizes = st.integers(min_value=0, max_value=CAP - recording_cost(rec(0, 0)))


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(sizes, st.integers(0, 5)), min_size=1, max_size=120))
def test_property_every_recording_once_no_disc_over_capacity_near_lower_bound(items):
    recs = [rec(i + 1, size, f"S{s}") for i, (size, s) in enumerate(items)]
    plan = plan_discs(recs, SMALL, station="p", serial=1, year=2024)
    check_plan(plan, recs)
    costs = [recording_cost(r) for r in recs]
    assert plan.lower_bound == lower_bound(costs, CAP)
    assert plan.lower_bound >= math.ceil(sum(costs) / CAP)
    assert len(plan.discs) <= plan.lower_bound + 1


@settings(max_examples=EXAMPLES, deadline=None, database=None)
@given(st.lists(st.tuples(sizes, st.integers(0, 3)), min_size=1, max_size=9))
def test_property_within_one_disc_of_the_optimum(items):
    recs = [rec(i + 1, size, f"S{s}") for i, (size, s) in enumerate(items)]
    plan = plan_discs(recs, SMALL, station="p", serial=1, year=2024)
    check_plan(plan, recs)
    assert len(plan.discs) <= optimum([recording_cost(r) for r in recs], CAP) + 1


@settings(max_examples=max(1, EXAMPLES // 3), deadline=None, database=None)
@given(st.lists(st.integers(min_value=1, max_value=CAP // 8), min_size=20, max_size=300))
def test_property_small_recordings_fill_discs(sizes_):
    # recordings small against the disc (clips against a BD-R): no disc is wasted
    recs = [rec(i + 1, size, f"S{i % 7}") for i, size in enumerate(sizes_)]
    plan = plan_discs(recs, SMALL, station="p", serial=1, year=2024)
    check_plan(plan, recs)
    costs = [recording_cost(r) for r in recs]
    assert len(plan.discs) <= math.ceil(sum(costs) / CAP) + 1
