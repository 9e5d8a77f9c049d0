"""The hashing file objects: the image hash is right whatever order pycdlib writes in."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from appliance.burner.errors import SourceMismatch
from appliance.burner.streams import HashingSink, SourceReader


@pytest.fixture
def executor():
    with ThreadPoolExecutor(1) as ex:
        yield ex


def _sink_hash(tmp_path, executor, writes, data_start, total):
    path = tmp_path / "img"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        sink = HashingSink(fd, executor, data_start)
        for pos, data in writes:
            sink.seek(pos)
            sink.write(data)
        digest = sink.finish(total)
    finally:
        os.close(fd)
    with open(path, "r+b") as f:
        f.truncate(total)
    return digest, hashlib.sha256(path.read_bytes()).hexdigest(), sink


def test_pycdlib_like_order_hashes_without_reading_the_data_back(tmp_path, executor):
    # metadata scattered in the first 64 KiB plus an anchor at the end, then data in order
    rnd = random.Random(1)
    meta = [(rnd.randrange(0, 60_000), os.urandom(rnd.randrange(1, 2048))) for _ in range(40)]
    data_start = 65_536
    writes = meta + [(1_000_000 - 2048, os.urandom(2048))]
    pos = data_start
    for _ in range(30):
        block = os.urandom(20_000)
        writes.append((pos, block))
        pos += len(block) + 48                       # zero padding left as a hole
    digest, expected, sink = _sink_hash(tmp_path, executor, writes, data_start, 1_000_000)
    assert digest == expected
    assert sink.reread_bytes <= 60_000 + 2048 + 2048  # only metadata and the anchor


def test_any_order_including_backwards_is_still_right(tmp_path, executor):
    rnd = random.Random(2)
    writes = [(rnd.randrange(0, 200_000), os.urandom(rnd.randrange(1, 9000))) for _ in range(200)]
    total = max(p + len(d) for p, d in writes) + 5
    digest, expected, sink = _sink_hash(tmp_path, executor, writes, None, total)
    assert digest == expected


def test_source_reader_checks_size_and_hash(tmp_path, executor):
    f = tmp_path / "rec.mp4"
    data = os.urandom(100_000)
    f.write_bytes(data)
    good = SourceReader(f, len(data), hashlib.sha256(data).hexdigest(), "recording 1", executor)
    good.seek(0)
    assert b"".join(iter(lambda: good.read(7000), b"")) == data and good.verified
    bad = SourceReader(f, len(data), "0" * 64, "recording 2", executor)
    bad.seek(0)
    with pytest.raises(SourceMismatch, match="recording 2"):
        while bad.read(7000):
            pass
    short = SourceReader(f, len(data) + 1, "0" * 64, "recording 3", executor)
    with pytest.raises(SourceMismatch, match="100000 bytes, catalogued 100001"):
        short.read(10)


def _resident_bytes(path) -> int:
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                         check=True, capture_output=True, text=True).stdout
    return int(out.strip())


@pytest.mark.skipif(shutil.which("fincore") is None, reason="util-linux fincore is not installed")
def test_image_data_is_written_behind_and_dropped_from_the_page_cache(tmp_path, executor):
    # A multi-GB image left dirty makes the final fsync stall and pushes useful pages out
    # of memory; the sink starts the disk write as it goes and drops what is on disk.
    fs_type = subprocess.run(["stat", "-f", "-c", "%T", str(tmp_path)], check=True,
                             capture_output=True, text=True).stdout.strip()
    if fs_type == "tmpfs":
        pytest.skip("tmpfs keeps every page in memory: there is no disk to write behind to")
    path = tmp_path / "img"
    block = os.urandom(4 << 20)
    total = 256 << 20
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        sink = HashingSink(fd, executor, 0)
        for _ in range(total // len(block)):
            sink.write(block)
        resident = _resident_bytes(path)
        digest = sink.finish(total)
    finally:
        os.close(fd)
    assert digest == hashlib.sha256(block * (total // len(block))).hexdigest()
    assert resident <= total // 2, f"{resident >> 20} MiB of {total >> 20} MiB still cached"
