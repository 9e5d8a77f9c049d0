"""The continuity check (art. 5, 6) on real clips: MP4 files made with ffmpeg, given file times
that put them at known start times, ingested and probed by the appliance; the gaps, overlaps
and clock jumps between them are flagged exactly, a clip ingested later that fills a gap
supersedes its flag, and a review is kept with who made it."""

from __future__ import annotations

import asyncio
import os
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from appliance.catalog import continuity
from appliance.demo.cameras import generate_clip
from appliance.vault.probe import probe

pytestmark = [pytest.mark.config(ingest={"ffprobe": True}),
              pytest.mark.skipif(not shutil.which("ffmpeg") or not shutil.which("ffprobe"),
                                 reason="ffmpeg and ffprobe make and read the clips")]

T0 = datetime(2026, 11, 27, 8, 0, 0)      # camera wall clock (station time, Asia/Shanghai)
SHANGHAI = ZoneInfo("Asia/Shanghai")


async def _duration(path: Path) -> float:
    facts = await probe(path)
    assert facts.get("duration_s"), facts
    return facts["duration_s"]


async def _camera(root: Path, serial: str, cache: Path, clips: list[tuple[str, float]]) -> dict[str, tuple]:
    """A camera folder with real clips, each ``(name, seconds after the previous clip ended)``
    (negative: it began before the previous one ended). A file's time is its end (its start
    plus its real duration, as ffprobe reads it), as a camera writes it. Returns
    name -> (start, end) on the camera's clock."""
    root.mkdir(parents=True)
    (root / "DEVICE.TXT").write_text(f"MODEL=DSJ\nSERIAL={serial}\n")
    times = {}
    previous_end = T0
    for index, (name, after) in enumerate(clips, start=1):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(generate_clip(cache, 4.0, index).read_bytes() + name.encode())   # no two alike
        start = previous_end + timedelta(seconds=after)
        end = start + timedelta(seconds=await _duration(path))
        stamp = int(end.replace(tzinfo=timezone.utc).timestamp() * 1e9)
        os.utime(path, ns=(stamp, stamp))
        times[name.rsplit("/", 1)[1]] = (start, end)
        previous_end = end
    return times


async def _probed(harness) -> None:
    async with asyncio.timeout(60):
        while harness.rows("SELECT COUNT(*) AS n FROM recordings WHERE probed_at IS NULL")[0]["n"]:
            await asyncio.sleep(0.1)


def _flags(harness):
    return {(r["prev_path"].rsplit("/", 1)[1], r["next_path"].rsplit("/", 1)[1]): (r["kind"], r["seconds"], r["state"])
            for r in harness.catalog.run(continuity.flags)}


async def test_gaps_overlaps_and_clock_jumps_are_flagged_exactly(harness, tmp_path, camera_cache):
    harness.register("GAP01")
    times = await _camera(tmp_path / "cam", "GAP01", camera_cache, [
        ("DCIM/100/REC_0001.MP4", 0),
        ("DCIM/100/REC_0002.MP4", 30),       # 30 s after 0001 ended: a gap
        ("DCIM/100/REC_0003.MP4", 1),        # 1 s: within the tolerance
        ("DCIM/100/REC_0004.MP4", -3),       # starts 3 s before 0003 ended: an overlap
        ("DCIM/100/REC_0006.MP4", 120),      # 2 min: a gap
        ("DCIM/100/REC_0005.MP4", 1),        # numbered before 0006, recorded after it: clock set back
        ("DCIM/100/REC_0007.MP4", 1200),     # 20 min: a new action, not an interruption
    ])
    result = await harness.ingest(1, tmp_path / "cam")
    assert result.result == "done", result.reason
    await _probed(harness)
    flags = _flags(harness)
    assert {pair: kind for pair, (kind, _s, _st) in flags.items()} == {
        ("REC_0001.MP4", "REC_0002.MP4"): "gap", ("REC_0003.MP4", "REC_0004.MP4"): "overlap",
        ("REC_0004.MP4", "REC_0006.MP4"): "gap", ("REC_0006.MP4", "REC_0005.MP4"): "clock_jump"}
    expected = {("REC_0001.MP4", "REC_0002.MP4"): 30, ("REC_0003.MP4", "REC_0004.MP4"): 3,
                ("REC_0004.MP4", "REC_0006.MP4"): 120, ("REC_0006.MP4", "REC_0005.MP4"): 1}
    for (a, b), (kind, seconds, state) in flags.items():
        between = (times[b][0] - times[a][1]).total_seconds()
        assert abs(between - (expected[(a, b)] if kind != "overlap" else -expected[(a, b)])) < 1e-3
        assert abs(seconds - expected[(a, b)]) < 0.01, (a, b, seconds)
        assert state == "open"
    row = next(f for f in harness.catalog.run(continuity.flags) if f["kind"] == "overlap")
    assert datetime.fromisoformat(row["prev_end"]) == times["REC_0003.MP4"][1].replace(tzinfo=SHANGHAI)
    audit = [r["action"] for r in harness.rows("SELECT action FROM audit_log WHERE action LIKE 'continuity.%'")]
    assert sorted(audit) == ["continuity.clock_jump", "continuity.gap", "continuity.gap", "continuity.overlap"]
    assert harness.catalog.run(continuity.rescan) == 0       # a full walk finds the same, nothing new


async def test_a_clip_ingested_later_supersedes_the_gap_it_fills_and_reviews_are_kept(harness, tmp_path,
                                                                                     camera_cache):
    harness.register("GAP02")
    times = await _camera(tmp_path / "first", "GAP02", camera_cache, [
        ("DCIM/A_0001.MP4", 0), ("DCIM/A_0003.MP4", 60), ("DCIM/A_0004.MP4", 120)])
    assert (await harness.ingest(1, tmp_path / "first")).result == "done"
    await _probed(harness)
    flags = {pair: (kind, state) for pair, (kind, _s, state) in _flags(harness).items()}
    assert flags == {("A_0001.MP4", "A_0003.MP4"): ("gap", "open"), ("A_0003.MP4", "A_0004.MP4"): ("gap", "open")}
    # the second gap is explained
    second = next(f for f in harness.catalog.run(continuity.flags) if f["prev_path"].endswith("A_0003.MP4"))
    harness.catalog.run(continuity.review, second["id"], "执法对象离开现场，录制暂停后重新开始", actor="leader")
    with pytest.raises(continuity.ContinuityError, match="explained already"):
        harness.catalog.run(continuity.review, second["id"], "again", actor="leader")
    # the missing clip turns up from another card (a second docking): it fills the first gap
    gap_start = times["A_0001.MP4"][1]
    await _camera(tmp_path / "second", "GAP02", camera_cache, [("DCIM/B_0002.MP4", (gap_start - T0).total_seconds() + 10)])
    assert (await harness.ingest(2, tmp_path / "second")).result == "done"
    await _probed(harness)
    after = _flags(harness)
    assert after[("A_0001.MP4", "A_0003.MP4")][2] == "superseded"
    assert after[("A_0003.MP4", "A_0004.MP4")][2] == "explained"           # never hidden
    assert ("A_0001.MP4", "B_0002.MP4") in after and ("B_0002.MP4", "A_0003.MP4") in after
    explained = next(f for f in harness.catalog.run(continuity.flags) if f["state"] == "explained")
    assert explained["reviewed_by"] == "leader" and "录制暂停" in explained["explanation"]
    actions = [r["action"] for r in harness.rows("SELECT action FROM audit_log WHERE action LIKE 'continuity.%'")]
    assert "continuity.review" in actions and "continuity.superseded" in actions


def test_the_command_line_rescans_a_catalog(tmp_path):
    """``appliance continuity rescan``: a catalog from before the check gets its flags."""
    import subprocess
    import sys

    import yaml

    from appliance.catalog import registry
    from appliance.catalog.db import Catalog

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"vault": {"path": str(tmp_path / "v")}, "state_dir": str(tmp_path / "s")}))
    catalog = Catalog(tmp_path / "v" / "catalog" / "catalog.sqlite")
    catalog.run(registry.add_device, "OLD01", officer="张伟")

    def seed(conn):
        conn.execute("INSERT INTO sessions (id, device_serial, slot, profile, state, vault_dir, started_at,"
                     " updated_at) VALUES ('S', 'OLD01', '1', 'generic', 'done', 'media/s', '2026-01-01', '2026-01-01')")
        for n, end in enumerate(("2026-01-05T01:00:10+00:00", "2026-01-05T01:01:10+00:00")):
            conn.execute("INSERT INTO recordings (session_id, device_serial, rel_path_raw, rel_path, vault_path, size,"
                         " mtime_ns, camera_mtime, sha256, ingested_at, duration_s, probed_at) VALUES"
                         " ('S', 'OLD01', ?, ?, ?, 1, 0, ?, '0', '2026-01-05', 10.0, '2026-01-05')",
                         (f"c{n}.mp4".encode(), f"DCIM/C_{n:04d}.MP4", f"media/s/c{n}.mp4", end))
    catalog.run(seed)
    catalog.close()
    out = subprocess.run([sys.executable, "-m", "appliance", "continuity", "rescan", "--config", str(config)],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "1 new flag" in out.stdout, out.stderr
    again = subprocess.run([sys.executable, "-m", "appliance", "continuity", "rescan", "--config", str(config)],
                           capture_output=True, text=True)
    assert "0 new flag" in again.stdout
