"""Burning with real xorriso onto stdio: pseudo-drives; read-back; failures fail cleanly."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from appliance.burner import drive
from appliance.burner.errors import (BurnFailed, DriveError, MediumTooSmall, NoMedia, NotBlank,
                                     VerifyFailed, WrongMedia)
from appliance.burner.image import build_image
from appliance.burner.media import MEDIA
from appliance.burner.plan import plan_discs

from .conftest import require
from .fullfs import fullfs


@pytest.fixture
def image(tmp_path, make_recordings):
    require("xorriso")
    recs = make_recordings([("S1/DCIM/执法记录仪_0001.MP4", 700_000), ("S1/DCIM/it's.MP4", 400_000),
                            ("S1/AUDIO/录音.WAV", 50_000)])
    disc = plan_discs(recs, MEDIA["cd"], station="demo", serial=1, year=2024).discs[0]
    (tmp_path / "images").mkdir()
    return build_image(disc, tmp_path / "images" / "disc.iso", station_name="演示执法站")


@contextlib.contextmanager
def tmpfs(path: Path, size: str, *, ro: bool = False):
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size},mode=0755" + (",ro" if ro else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


async def collect(agen) -> list:
    return [event async for event in agen]


async def test_burn_read_back_and_verify_on_a_pseudo_drive(tmp_path, image):
    target = f"stdio:{tmp_path / 'burned.img'}"
    status = await drive.probe(target)
    assert status.blank and status.pseudo and status.free_sectors > 1000
    events = await collect(drive.burn_and_verify(target, image.path, sha256=image.sha256))
    phases = [e.phase for e in events]
    assert phases[:2] == ["checking", "ready"]
    assert phases[-3:] == ["written", "verified", "ejected"]
    assert events[-2].message == image.sha256
    report = await drive.verify_disc(target)
    assert report.ok, (report.failed, report.problems, report.unexpected)
    assert report.label == "demo-2024-0001-1/1" and len(report.checked) == 3 + 4
    # a written disc is not blank any more
    with pytest.raises(NotBlank, match="insert a blank"):
        await collect(drive.burn(target, image.path))


async def test_a_disc_altered_after_burning_is_caught(tmp_path, image):
    target = tmp_path / "burned.img"
    await collect(drive.burn(f"stdio:{target}", image.path))
    await collect(drive.read_back(f"stdio:{target}", size=image.size, sha256=image.sha256))
    # flip one byte inside the first recording's data, as a bad burn or tampering would
    report = await drive.verify_disc(f"stdio:{target}")
    assert report.ok
    data = target.read_bytes()
    victim = image.path.read_bytes().find(
        (tmp_path / "vault" / "00001.bin").read_bytes()[:4096])
    assert victim > 0
    with open(target, "r+b") as f:
        f.seek(victim + 1234)
        f.write(bytes([data[victim + 1234] ^ 0x55]))
    with pytest.raises(VerifyFailed, match="reads back with SHA-256"):
        await collect(drive.read_back(f"stdio:{target}", size=image.size, sha256=image.sha256))
    report = await drive.verify_disc(target)            # a plain path works as an image too
    assert not report.ok
    assert [c.path for c in report.failed] == ["S1/DCIM/执法记录仪_0001.MP4"]


async def test_a_short_disc_is_caught(tmp_path, image):
    target = tmp_path / "short.img"
    target.write_bytes(image.path.read_bytes()[: image.size // 2])
    with pytest.raises(VerifyFailed, match="ends after"):
        await collect(drive.read_back(f"stdio:{target}", size=image.size, sha256=image.sha256))


async def test_too_small_target_is_refused_before_burning(tmp_path, image):
    require("mount")
    with tmpfs(tmp_path / "small", "1m") as small:
        with pytest.raises(MediumTooSmall, match="the image needs"):
            await collect(drive.burn(f"stdio:{small / 'disc.img'}", image.path))
        assert list(small.iterdir()) == []


async def test_read_only_target_fails_cleanly(tmp_path, image):
    with tmpfs(tmp_path / "ro", "64m", ro=True) as ro:
        started = time.monotonic()
        with pytest.raises(BurnFailed, match="Read-only file system"):
            await collect(drive.burn(f"stdio:{ro / 'disc.img'}", image.path))
        assert time.monotonic() - started < 30


@pytest.mark.parametrize("err,reason", [(errno.ENOSPC, "No space left on device"),
                                        (errno.EIO, "Input/output error")])
async def test_target_failing_mid_burn_fails_cleanly(tmp_path, image, err, reason):
    require("fusermount")
    limit = 512 * 1024                         # the image is about 1.3 MB
    with fullfs(tmp_path / "backing", tmp_path / "mnt", limit, err) as mnt:
        events = []
        with pytest.raises(BurnFailed) as failure:
            async for event in drive.burn(f"stdio:{mnt / 'disc.img'}", image.path):
                events.append(event)
        assert "ready" in [e.phase for e in events]          # the checks passed: it failed while writing
        assert "Cannot write" in str(failure.value) and reason in str(failure.value), str(failure.value)
        written = (tmp_path / "backing" / "disc.img").stat().st_size
        assert 0 < written <= limit


async def test_a_drive_that_stops_answering_is_given_up(tmp_path, image):
    fake = tmp_path / "xorriso"
    fake.write_text("#!/bin/sh\necho 'I:1: xorriso : UPDATE :    1 of    2 MB written'\nexec sleep 60\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    started = time.monotonic()
    with pytest.raises(BurnFailed, match="stopped responding"):
        await collect(drive.burn(f"stdio:{tmp_path / 'd.img'}", image.path, check=False,
                                 xorriso=str(fake), stall_timeout=1))
    assert time.monotonic() - started < 15


def test_progress_lines_of_xorriso_are_parsed():
    size = 210_089_984
    e = drive.parse_progress(
        "I:1: xorriso : UPDATE :  158 of  200 MB written (fifo 99%) [buf  50%]  49.8x.", "d", size)
    assert e.phase == "writing" and e.done_bytes == 158 << 20 and e.speed == "49.8x"
    assert 0.75 < e.fraction < 0.8
    e = drive.parse_progress("I:1: xorriso : UPDATE :    4 of  200 MB written (fifo  0%) [buf  50%]", "d", size)
    assert e.done_bytes == 4 << 20 and e.speed is None
    assert drive.parse_progress("I:1: xorriso : UPDATE : Closing track/session. Working since 2 seconds",
                                "d", size).phase == "closing"
    assert drive.parse_progress("I:1: Media status : is blank", "d", size) is None


async def test_progress_is_streamed_while_xorriso_writes(tmp_path, image):
    # a stand-in for xorriso that writes slowly, as a real drive does
    fake = tmp_path / "xorriso"
    fake.write_text(
        "#!/bin/sh\n"
        "for n in 1 2 3; do echo \"I:1: xorriso : UPDATE :    $n of    3 MB written (fifo 99%) [buf 50%]  8.0x.\";"
        " sleep 0.2; done\n"
        "echo \"I:1: xorriso : UPDATE : Closing track/session. Working since 1 seconds\"\n"
        "echo \"I:1: Writing to 'stdio:/x' completed successfully.\"\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    seen = []
    async for event in drive.burn(f"stdio:{tmp_path / 'd.img'}", image.path, check=False, xorriso=str(fake)):
        seen.append((event.phase, event.done_bytes, time.monotonic()))
    assert [p for p, _, _ in seen] == ["checking", "ready", "writing", "writing", "writing", "closing", "written"]
    assert seen[4][2] - seen[2][2] > 0.3               # events arrive as they happen, not at the end


async def test_missing_xorriso_and_bad_addresses(tmp_path, image):
    with pytest.raises(DriveError, match="not installed"):
        await drive.probe(f"stdio:{tmp_path / 'x.img'}", xorriso=str(tmp_path / "nope"))
    with pytest.raises(DriveError, match="absolute"):
        drive.Drive.parse("stdio:relative.img")
    with pytest.raises(DriveError, match="/dev/sr0"):
        drive.Drive.parse("sr0")
    with pytest.raises(DriveError, match="does not exist"):
        await drive.probe("stdio:/nonexistent-folder/x.img")
    assert drive.Drive.parse("/dev/sr0").pseudo is False
    assert drive.Drive.parse(tmp_path / "a.iso").address == f"stdio:{tmp_path / 'a.iso'}"


async def test_several_drives_burn_at_once(tmp_path, image):
    import asyncio
    targets = [f"stdio:{tmp_path / f'd{i}.img'}" for i in range(3)]
    results = await asyncio.gather(*(collect(drive.burn_and_verify(t, image.path, sha256=image.sha256))
                                     for t in targets))
    assert all(r[-2].phase == "verified" for r in results)
    assert len({os.path.getsize(t[len('stdio:'):]) for t in targets}) == 1


def _fake_toc(tmp_path: Path, media: str, status: str, space: int) -> str:
    """A stand-in for xorriso answering -toc as a real drive with a disc in it does."""
    fake = tmp_path / "xorriso-toc"
    fake.write_text(
        "#!/bin/sh\n"
        "echo \"R:1: Media space  : %ds\"\n"
        "echo \"R:1: Drive type   : vendor 'HL-DT-ST' product 'BD-RE  WH16NS60' revision '1.02'\"\n"
        "echo \"R:1: Media current: %s\"\n"
        "echo \"R:1: Media status : %s\"\n" % (space, media, status))
    fake.chmod(0o755)
    return str(fake)


async def test_blank_checks_on_a_real_drive(tmp_path, image):
    bd_blank = _fake_toc(tmp_path, "BD-R sequential recording", "is blank", 12_219_392)
    st = await drive.check_ready("/dev/sr0", image.size, xorriso=bd_blank)
    assert st.medium.key == "bd25" and st.medium.reported and st.vendor == "HL-DT-ST"
    rom = _fake_toc(tmp_path, "BD-ROM", "is written , is closed", 0)
    with pytest.raises(WrongMedia, match="not a recordable"):
        await drive.check_ready("/dev/sr0", image.size, medium=MEDIA["bd25"], xorriso=rom)
    used = _fake_toc(tmp_path, "DVD+R", "is written , is closed", 0)
    with pytest.raises(NotBlank):
        await drive.check_ready("/dev/sr0", image.size, xorriso=used)
    tiny = _fake_toc(tmp_path, "CD-R", "is blank", 500)
    with pytest.raises(MediumTooSmall, match="the plan is for BD-R 25GB"):
        await drive.check_ready("/dev/sr0", image.size, medium=MEDIA["bd25"], xorriso=tiny)
    empty = tmp_path / "xorriso-empty"
    empty.write_text("#!/bin/sh\necho 'I:1: libburn : SORRY : No media present'\nexit 0\n")
    empty.chmod(0o755)
    with pytest.raises(NoMedia, match="No media present"):
        await drive.check_ready("/dev/sr0", image.size, xorriso=str(empty))


async def test_leaving_a_burn_early_stops_xorriso(tmp_path, image):
    fake = tmp_path / "xorriso"
    pidfile = tmp_path / "pid"
    fake.write_text(f"#!/bin/sh\necho $$ > {pidfile}\n"
                    "echo 'I:1: xorriso : UPDATE :    1 of    9 MB written'\nexec sleep 60\n")
    fake.chmod(0o755)
    async with contextlib.aclosing(drive.burn(f"stdio:{tmp_path / 'd.img'}", image.path, check=False,
                                              xorriso=str(fake))) as events:
        async for event in events:
            if event.phase == "writing":
                break
    pid = int(pidfile.read_text())
    for _ in range(50):
        if not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]:
            break
        time.sleep(0.1)
    else:
        pytest.fail("xorriso still runs after the burn was abandoned")
