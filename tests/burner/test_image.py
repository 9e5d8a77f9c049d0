"""Images built with pycdlib, read back with other tools: xorriso, isoinfo, 7-Zip (UDF)."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import threading
from pathlib import Path

import pytest

from appliance.burner.errors import BuildCancelled, ImageError, SourceMismatch
from appliance.burner.image import build_image
from appliance.burner.media import MEDIA
from appliance.burner.model import RecordSession
from appliance.burner.plan import plan_discs

from .conftest import require

LONG = "执法记录仪现场取证录像" * 3 + ".MP4"          # longer than pycdlib lets Joliet hold
NAMES = [
    ("20240501-张三/DCIM/100MEDIA/执法记录仪_0001.MP4", 300_000),
    ("20240501-张三/DCIM/100MEDIA/FILE0002.MP4", 123_457),
    (f"20240501-张三/DCIM/100MEDIA/{LONG}", 70_001),
    ("20240501-张三/AUDIO/现场 录音: 问询?.WAV", 4_097),
    ("20240501-张三/AUDIO/it's empty.wav", 0),
]
NAMES_2 = [("20240502-李四/VIDEO/李四_0001.mp4", 250_000)]


def run(*argv: str, cwd: Path | None = None) -> str:
    require(argv[0])
    done = subprocess.run(argv, capture_output=True, cwd=cwd)
    assert done.returncode == 0, (argv, done.stderr.decode(errors="replace"))
    return done.stdout.decode("utf-8", errors="replace")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def disc_and_recs(make_recordings):
    recs = make_recordings(NAMES, session="S20240501-0001")
    recs += make_recordings(NAMES_2, session="S20240502-0001", officer="李四", serial="DSJ0002")
    plan = plan_discs(recs, MEDIA["cd"], station="demo", serial=7, year=2024)
    assert len(plan.discs) == 1
    return plan.discs[0], recs


SESSIONS = {"S20240501-0001": RecordSession("S20240501-0001", officers=("张三", "王五"),
                                            camera_operator="张三", case_number="农执罚〔2024〕12号")}


@pytest.fixture
def built(tmp_path, disc_and_recs):
    disc, recs = disc_and_recs
    out = tmp_path / "out"
    out.mkdir()
    result = build_image(disc, out / "disc.iso", sessions=SESSIONS, station_name="演示执法站",
                         audit_chain_head="c0ffee" + "0" * 58)
    return result, recs


def test_image_hash_size_and_fast_path(built):
    result, recs = built
    assert result.sha256 == sha256(result.path)
    assert result.size == result.path.stat().st_size and result.size % 2048 == 0
    assert result.path.stat().st_mode & 0o777 == 0o444
    assert not list(result.path.parent.glob(".*.part"))
    assert result.reread_bytes < 1 << 20       # only metadata was read back, never the data


def test_rock_ridge_tree_read_by_xorriso_has_every_byte_and_name(built, tmp_path):
    result, recs = built
    dest = tmp_path / "rr"
    run("xorriso", "-osirrox", "on", "-indev", f"stdio:{result.path}", "-extract", "/", str(dest))
    for r in recs:
        assert (dest / r.disc_path).read_bytes() == r.vault_path.read_bytes(), r.disc_path
    names = {str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()}
    assert names == {r.disc_path for r in recs} | {
        "MANIFEST.json", "SHA256SUMS", "README.txt", "index.html", "record-form.pdf", "record-form.html"}
    out = run("sha256sum", "-c", "SHA256SUMS", cwd=dest)
    assert out.count(": OK") == len(recs) + 5 and "FAILED" not in out


def test_isoinfo_sees_rock_ridge_names_and_plain_iso9660(built):
    result, recs = built
    rr = run("isoinfo", "-R", "-f", "-i", str(result.path))
    for r in recs:
        assert "/" + r.disc_path in rr.splitlines()
    plain = run("isoinfo", "-f", "-i", str(result.path))
    for line in plain.splitlines():
        assert all(c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./;" for c in line), line
    assert run("isoinfo", "-d", "-i", str(result.path)).count("Joliet with UCS level 3") == 1


def test_udf_tree_read_by_7zip_has_original_names_and_bytes(built, tmp_path):
    result, recs = built
    listing = run("7zz", "l", "-tudf", "-slt", str(result.path))
    paths = {line[len("Path = "):] for line in listing.splitlines() if line.startswith("Path = ")}
    for r in recs:
        assert r.disc_path in paths
    dest = tmp_path / "udf"
    run("7zz", "x", "-tudf", f"-o{dest}", str(result.path))
    for r in recs:
        assert (dest / r.disc_path).read_bytes() == r.vault_path.read_bytes()
    out = run("sha256sum", "-c", "SHA256SUMS", cwd=dest)           # fails the run on any mismatch
    assert out.count(": OK") == len(recs) + 5


def test_joliet_names_are_shortened_and_mapped_in_the_manifest(built, tmp_path):
    result, recs = built
    out = run("xorriso", "-read_fs", "norock", "-indev", f"stdio:{result.path}", "-find", "/",
              "-type", "f")
    joliet = {shlex.split(line)[0].lstrip("/") for line in out.splitlines() if line.startswith("'")}
    manifest = json.loads(_read(result, "MANIFEST.json"))
    mapping = manifest["joliet_names"]
    long_path = f"20240501-张三/DCIM/100MEDIA/{LONG}"
    assert long_path in mapping and mapping[long_path] in joliet
    assert "20240501-张三/AUDIO/现场 录音: 问询?.WAV" in mapping
    for r in recs:
        assert mapping.get(r.disc_path, r.disc_path) in joliet
    by_path = {m["path"]: m for m in manifest["recordings"]}
    assert by_path[long_path]["joliet_path"] == mapping[long_path]
    # Chinese names Joliet can hold stay as they are
    assert "20240501-张三/DCIM/100MEDIA/执法记录仪_0001.MP4" in joliet


def _read(result, path: str) -> bytes:
    r, w = os.pipe()
    proc = subprocess.Popen(["xorriso", "-osirrox", "on", "-indev", f"stdio:{result.path}",
                             "-concat", "append", f"/dev/fd/{w}", "/" + path, "--"],
                            pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    assert proc.wait() == 0
    return data


def test_manifest_index_and_readme(built):
    result, recs = built
    m = json.loads(_read(result, "MANIFEST.json"))
    assert m["audit_chain_head"] == "c0ffee" + "0" * 58
    assert m["disc"]["label"] == "demo-2024-0007-1/1" and m["disc"]["medium"] == "cd"
    assert {x["sha256"] for x in m["recordings"]} == {r.sha256 for r in recs}
    assert m["officers"] == ["张三", "李四", "王五"]
    assert {d["serial"] for d in m["devices"]} == {"DSJ0001", "DSJ0002"}
    assert m["sessions"][0]["case_number"] == "农执罚〔2024〕12号"
    assert m["sessions"][0]["place"] is None                          # not known, not invented
    assert {f["path"] for f in m["files"]} == {"record-form.pdf", "record-form.html", "index.html",
                                               "README.txt"}
    index = _read(result, "index.html").decode()
    assert '<video controls preload="metadata" src="20240501-%E5%BC%A0%E4%B8%89/DCIM/100MEDIA/' in index
    assert "it&#x27;s empty.wav" in index
    readme = _read(result, "README.txt").decode("utf-8-sig")
    assert "sha256sum -c SHA256SUMS" in readme and "c0ffee" in readme


def test_changed_vault_file_stops_the_build_and_leaves_nothing(tmp_path, disc_and_recs):
    disc, recs = disc_and_recs
    victim = recs[1].vault_path
    data = bytearray(victim.read_bytes())
    data[5000] ^= 1                                          # same size, one bit flipped
    victim.write_bytes(bytes(data))
    out = tmp_path / "out"
    out.mkdir()
    calls = []
    with pytest.raises(SourceMismatch, match=f"recording {recs[1].recording_id}"):
        build_image(disc, out / "disc.iso", progress=lambda d, t: calls.append(d))
    assert calls                                             # found while streaming...
    assert list(out.iterdir()) == []                         # ...and the partial image is gone


def test_prehash_stops_the_build_before_anything_is_written(tmp_path, disc_and_recs):
    disc, recs = disc_and_recs
    victim = recs[0].vault_path
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    out = tmp_path / "out"
    out.mkdir()
    calls = []
    with pytest.raises(SourceMismatch, match="catalogued"):
        build_image(disc, out / "disc.iso", prehash=True, progress=lambda d, t: calls.append(d))
    assert calls == [] and list(out.iterdir()) == []


def test_truncated_or_missing_vault_file_is_refused_before_writing(tmp_path, disc_and_recs):
    disc, recs = disc_and_recs
    out = tmp_path / "out"
    out.mkdir()
    with open(recs[0].vault_path, "r+b") as f:
        f.truncate(10)
    calls = []
    with pytest.raises(SourceMismatch, match="is 10 bytes, catalogued 300000"):
        build_image(disc, out / "disc.iso", progress=lambda d, t: calls.append(d))
    recs[1].vault_path.unlink()
    with pytest.raises(SourceMismatch):
        build_image(disc, out / "disc.iso")
    assert calls == [] and list(out.iterdir()) == []


def test_existing_image_is_never_overwritten_and_cancel_cleans_up(tmp_path, disc_and_recs):
    disc, _ = disc_and_recs
    target = tmp_path / "disc.iso"
    target.write_bytes(b"keep me")
    with pytest.raises(ImageError, match="never overwritten"):
        build_image(disc, target)
    assert target.read_bytes() == b"keep me"
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(BuildCancelled):
        build_image(disc, tmp_path / "other.iso", cancel=cancel)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disc.iso", "vault"]


async def test_async_build_runs_off_the_event_loop(tmp_path, disc_and_recs):
    from appliance.burner.image import build_image_async
    disc, _ = disc_and_recs
    threads = set()
    result = await build_image_async(disc, tmp_path / "a.iso", station_name="站",
                                     progress=lambda d, t: threads.add(threading.current_thread()))
    assert result.sha256 == sha256(result.path)
    assert threads and threading.main_thread() not in threads     # written in a worker thread
