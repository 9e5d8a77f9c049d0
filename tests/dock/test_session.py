"""Ingest sessions end to end on folder sources: the state machine, identity, wipe, resume."""

import json
import os
import stat
from pathlib import Path

import pytest

from appliance.catalog import audit
from appliance.vault.layout import MANIFEST

CLIP = os.urandom(300_000)


def camera(root: Path, serial: str | None = "CAM001", files: dict | None = None) -> Path:
    """A camera-like folder: DEVICE.TXT, media in DCIM, a non-media file."""
    root.mkdir(parents=True)
    if serial:
        (root / "DEVICE.TXT").write_text(f"MODEL=DSJ\nSERIAL={serial}\n")
    files = files if files is not None else {
        "DCIM/20261127/CAM001_0001.MP4": CLIP,
        "DCIM/20261127/执法记录_现场检查_0002.MP4": CLIP[::-1],
        "AUDIO/录音_0001.WAV": b"RIFF" + bytes(1000),
        "SYSTEM/log.bin": b"not media",
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


async def test_known_camera_is_ingested_verified_and_recorded(harness, tmp_path):
    harness.register("CAM001")
    src = camera(tmp_path / "cam")
    result = await harness.ingest(1, src)
    assert result.result == "done", result.reason
    recs = harness.rows("SELECT * FROM recordings ORDER BY rel_path")
    assert [r["rel_path"] for r in recs] == [
        "AUDIO/录音_0001.WAV", "DCIM/20261127/CAM001_0001.MP4", "DCIM/20261127/执法记录_现场检查_0002.MP4"]
    vault = harness.appliance.vault
    for r in recs:
        path = vault.absolute(r["vault_path"])
        assert path.read_bytes() == (src / r["rel_path"]).read_bytes()
        assert stat.S_IMODE(path.stat().st_mode) == 0o444
    session = harness.rows("SELECT * FROM sessions")[0]
    assert session["state"] == "done" and not session["quarantined"]
    assert session["vault_dir"].startswith("media/")
    manifest = json.loads((vault.root / session["vault_dir"] / MANIFEST).read_text())
    assert manifest["device"]["serial"] == "CAM001" and manifest["officer"] == "张伟"
    assert {f["sha256"] for f in manifest["files"]} == {r["sha256"] for r in recs}
    assert session["clock_drift_s"] is not None
    # Clock file written with station time; nothing wiped under the default policy.
    assert (src / "time.txt").exists()
    assert (src / "DCIM/20261127/CAM001_0001.MP4").exists()
    assert harness.appliance.board.get("1").state == "empty"  # undocked after the test's ingest
    actions = [r["action"] for r in harness.rows("SELECT action FROM audit_log ORDER BY seq")]
    assert "session.commit" in actions and "session.done" in actions
    assert harness.catalog.run(audit.verify_chain).ok


@pytest.mark.config(ingest={"wipe": "after-verify", "ffprobe": False})
async def test_wipe_deletes_only_verified_media(harness, tmp_path):
    harness.register("CAM001")
    src = camera(tmp_path / "cam")
    result = await harness.ingest(1, src)
    assert result.result == "done"
    assert not (src / "DCIM/20261127/CAM001_0001.MP4").exists()
    assert (src / "SYSTEM/log.bin").exists() and (src / "DEVICE.TXT").exists()
    assert harness.rows("SELECT wiped_files FROM sessions")[0]["wiped_files"] == 3


@pytest.mark.config(ingest={"wipe": "after-verify", "ffprobe": False})
async def test_unknown_camera_is_quarantined_and_never_touched(harness, tmp_path):
    src = camera(tmp_path / "cam", serial="STRANGER")
    result = await harness.ingest(2, src)
    assert result.result == "done" and result.quarantined
    session = harness.rows("SELECT * FROM sessions")[0]
    assert session["quarantined"] == 1 and session["vault_dir"].startswith("quarantine/")
    assert (src / "DCIM/20261127/CAM001_0001.MP4").exists()
    assert not (src / "time.txt").exists()
    assert harness.appliance.metrics.unknown_cameras._value.get() == 1


async def test_second_docking_copies_only_new_files(harness, tmp_path):
    harness.register("CAM001")
    src = camera(tmp_path / "cam")
    await harness.ingest(1, src)
    (src / "DCIM/20261127/CAM001_0003.MP4").write_bytes(b"new clip")
    result = await harness.ingest(3, src)
    assert result.result == "done"
    per_session = harness.rows("SELECT session_id, count(*) n FROM recordings GROUP BY session_id"
                               " ORDER BY min(id)")
    assert [r["n"] for r in per_session] == [3, 1]


async def test_serial_falls_back_to_udev_when_no_identity_file(harness, tmp_path):
    harness.register("USBSERIAL9")
    src = camera(tmp_path / "cam", serial=None)
    result = await harness.ingest(1, src, serial="USBSERIAL9")
    assert result.result == "done" and not result.quarantined


async def test_hostile_names_are_kept_exactly_and_shown_escaped(harness, tmp_path):
    harness.register("CAM001")
    long_name = ("很长的文件名" * 13)[:80] + ".mp4"
    src = camera(tmp_path / "cam", files={"DCIM/a": b""})
    media = os.fsencode(src / "DCIM")
    raw_names = [b"bad\xff\xfe.mp4", long_name.encode(), b"<script>alert(1)<%2f>.mp4",
                 b"line\nbreak.mp4", b"..mp4", b"empty.mp4"]
    for name in raw_names:
        with open(os.path.join(media, name), "wb") as fh:
            fh.write(b"" if name == b"empty.mp4" else name * 10)
    result = await harness.ingest(1, src)
    assert result.result == "done", result.reason
    recs = {bytes(r["rel_path_raw"]): r for r in harness.rows("SELECT * FROM recordings")}
    assert set(recs) == {b"DCIM/" + n for n in raw_names}
    bad = recs[b"DCIM/bad\xff\xfe.mp4"]
    assert bad["rel_path"] == "DCIM/bad\\xff\\xfe.mp4"
    # In the vault the name is valid UTF-8 with the bad bytes escaped; the bytes are kept too.
    assert bad["vault_path"].endswith("files/DCIM/bad\\xff\\xfe.mp4")
    assert harness.appliance.vault.absolute(bad["vault_path"]).read_bytes() == b"bad\xff\xfe.mp4" * 10
    session = harness.rows("SELECT vault_dir FROM sessions")[0]
    manifest = json.loads((harness.appliance.vault.root / session["vault_dir"] / MANIFEST).read_text())
    assert any("path_bytes_b64" in f for f in manifest["files"])


@pytest.mark.config(vault={"reserve": "1000TB"})
async def test_vault_below_reserve_refuses_cleanly(harness, tmp_path):
    harness.register("CAM001")
    src = camera(tmp_path / "cam")
    result = await harness.ingest(1, src)
    assert result.result == "failed" and result.vault_full
    assert "vault full" in result.reason
    assert harness.rows("SELECT count(*) n FROM recordings")[0]["n"] == 0
    assert harness.appliance.metrics.vault_full._value.get() == 1
    assert (src / "DCIM/20261127/CAM001_0001.MP4").exists()


async def test_two_slots_ingest_at_once_and_one_failure_does_not_stop_the_other(harness, tmp_path):
    harness.register("CAM001")
    harness.register("CAM002", "李娜")
    good = camera(tmp_path / "good", serial="CAM002")
    broken = tmp_path / "not-a-camera.img"
    broken.write_bytes(os.urandom(1 << 20))
    from appliance.dock.events import SourceKind
    harness.dock(1, broken, SourceKind.IMAGE, serial="CAM001")
    harness.dock(2, good)
    import asyncio
    await asyncio.sleep(0)
    await asyncio.wait_for(harness.appliance.wait_idle(), 60)
    results = {harness.appliance.board.get(s).slot: harness.appliance.board.get(s).state for s in ("1", "2")}
    assert results == {"1": "failed", "2": "done"}
    assert "无法读取" in harness.appliance.board.get("1").message_zh
