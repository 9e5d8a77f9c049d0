"""A recording over 4 GiB on a BD-R image: multi-extent in ISO 9660, one file in UDF.

Slow (it writes a 4.5 GB image and reads it back three times): ``pytest -m slow``.
The timings of each step are printed (``-s``) and recorded as test properties.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import time

import pytest

from appliance.burner import drive
from appliance.burner.image import build_image
from appliance.burner.media import MEDIA
from appliance.burner.model import DiscRecording
from appliance.burner.plan import plan_discs

from .conftest import require

BIG = 4 * 2**30 + 512 * 2**20 + 12_345            # 4.5 GiB and an odd tail
MARKS = (0, 2**32 - 2048, 2**32 - 7, 2**32, 2**32 + 2**20, BIG - 4096)


def _hash_stream(argv: list[str]) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as proc:
        while block := proc.stdout.read(4 << 20):
            h.update(block)
            n += len(block)
    assert proc.returncode == 0, argv
    return h.hexdigest(), n


@pytest.mark.slow
@pytest.mark.timeout(1800)
async def test_recording_over_4_gib_reads_back_intact_in_udf_and_iso9660(tmp_path, record_property):
    for tool in ("xorriso", "7zz", "isoinfo"):
        require(tool)
    if shutil.disk_usage(tmp_path).free < 12 * 10**9:
        pytest.skip("needs 12 GB free for a 4.5 GB image")
    times: dict[str, float] = {}
    t = time.monotonic()

    # a sparse file with marks around the 4 GiB boundary, where a chunking bug would show
    vault = tmp_path / "vault"
    vault.mkdir()
    big = vault / "big.bin"
    with open(big, "wb") as f:
        f.truncate(BIG)
        for i, off in enumerate(MARKS):
            f.seek(off)
            f.write(f"mark {i} at {off}".encode().ljust(4096, b"#")[: BIG - off])
    h = hashlib.sha256()
    with open(big, "rb") as f:
        while block := f.read(8 << 20):
            h.update(block)
    big_sha = h.hexdigest()
    small = vault / "small.bin"
    small.write_bytes(os.urandom(100_000))
    recs = [
        DiscRecording(1, "S1", big, "S1/DCIM/超过4GB的录像.MP4", BIG, big_sha, officer="张三"),
        DiscRecording(2, "S1", small, "S1/DCIM/之后的文件.MP4", 100_000,
                      hashlib.sha256(small.read_bytes()).hexdigest(), officer="张三"),
    ]
    times["prepare_s"] = time.monotonic() - t

    t = time.monotonic()
    disc = plan_discs(recs, MEDIA["bd25"], station="demo", serial=9, year=2024).discs[0]
    image = build_image(disc, tmp_path / "bd.iso", station_name="演示执法站")
    times["build_s"] = time.monotonic() - t
    assert image.reread_bytes < 1 << 20

    # ISO 9660 (+ Rock Ridge) as xorriso reads it: several extents, the same bytes
    t = time.monotonic()
    lba = subprocess.run(["xorriso", "-indev", f"stdio:{image.path}", "-find", "/", "-type", "f",
                          "-name", "超过4GB的录像.MP4", "-exec", "report_lba", "--"],
                         capture_output=True, text=True, check=True).stdout
    extents = [line for line in lba.splitlines() if line.startswith("File data lba:")]
    assert len(extents) >= 2, lba
    digest, n = _hash_stream(["xorriso", "-osirrox", "on", "-indev", f"stdio:{image.path}",
                              "-concat", "append", "-", "/S1/DCIM/超过4GB的录像.MP4", "--"])
    assert (digest, n) == (big_sha, BIG)
    times["iso9660_readback_s"] = time.monotonic() - t
    listing = subprocess.run(["isoinfo", "-l", "-i", str(image.path)], capture_output=True,
                             check=True).stdout.decode("latin-1")
    # ISO 9660 keeps the ASCII of the name, "4GB.MP4"; one directory record per extent
    records = [line for line in listing.splitlines() if re.search(r"\s4GB\.MP4;1\s*$", line)]
    assert len(records) == len(extents) >= 2, listing

    # UDF as 7-Zip reads it: one file, the same bytes
    t = time.monotonic()
    digest, n = _hash_stream(["7zz", "x", "-tudf", "-so", str(image.path), "S1/DCIM/超过4GB的录像.MP4"])
    assert (digest, n) == (big_sha, BIG)
    times["udf_readback_s"] = time.monotonic() - t

    # the whole image against its own manifest, as `appliance disc verify` does
    t = time.monotonic()
    report = await drive.verify_disc(image.path)
    assert report.ok, report.failed
    times["verify_disc_s"] = time.monotonic() - t

    for key, value in times.items():
        record_property(key, round(value, 2))
    print("\n4.5 GiB recording on BD-R image:", {k: round(v, 1) for k, v in times.items()},
          f"image {image.size / 1e9:.2f} GB")
