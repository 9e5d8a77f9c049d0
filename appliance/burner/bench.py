"""Benchmark: building a disc image with the burner against ``xorriso -as mkisofs``.

Both build an image of the same files in the same run, alternating, a few rounds; the
figure is ``ratio = xorriso's time / the burner's time`` (1.0 = as fast as xorriso,
higher is faster). The issue's goal is a ratio of 1.0 or better.

The two do not do the same work, and the JSON says so: the burner also writes a UDF
tree, checks every source file's SHA-256 against the catalogue, computes the image's
SHA-256 and lays out the PDF record form; xorriso writes ISO 9660 + Rock Ridge + Joliet
only. Both times include an fsync of the finished image (the burner always syncs its
image; an image is only ready to burn once it is on disk); xorriso's time without the
fsync is reported too. Between runs the page cache is synced so neither pays for the
other's write-back; the source files stay in the page cache for both.

Standalone: ``python -m appliance.burner.bench --size 2GB``; the command line wires it
to ``appliance bench burn``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from appliance.burner.image import build_image
from appliance.burner.media import medium as medium_by_key
from appliance.burner.model import DiscRecording, RecordSession
from appliance.burner.plan import plan_discs


def make_sources(folder: Path, total_bytes: int, files: int) -> list[DiscRecording]:
    """``files`` recordings of pseudo-random content adding up to ``total_bytes``, with
    Chinese names, spread over two sessions; hashes computed as the catalogue has them."""
    folder.mkdir(parents=True, exist_ok=True)
    block = os.urandom(16 << 20)
    t0 = datetime(2024, 5, 1, 8, 0, tzinfo=timezone.utc)
    recs = []
    per_file = total_bytes // files
    for i in range(files):
        size = per_file + (total_bytes - per_file * files if i == files - 1 else 0)
        session = f"S2024050{1 + i % 2}-bench"
        path = folder / f"rec{i:04d}.mp4"
        h = hashlib.sha256()
        with open(path, "wb") as f:
            left = size
            n = 0
            while left:
                chunk = (n.to_bytes(8, "little") + i.to_bytes(8, "little") + block)[:min(left, 16 << 20)]
                f.write(chunk)
                h.update(chunk)
                left -= len(chunk)
                n += 1
        recs.append(DiscRecording(
            recording_id=i + 1, session_id=session, vault_path=path,
            disc_path=f"{session}/DCIM/100MEDIA/执法记录仪_{i:04d}.MP4", size=size,
            sha256=h.hexdigest(), officer="张三", device_serial="BENCH001", device_brand="Bench",
            device_model="B1", start_time=t0 + timedelta(minutes=5 * i),
            end_time=t0 + timedelta(minutes=5 * i + 4), duration_s=240.0, format="MP4"))
    return recs


def _graft(disc_path: str) -> str:
    return disc_path.replace("\\", "\\\\").replace("=", "\\=")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while block := f.read(4 << 20):
            h.update(block)
    return h.hexdigest()


def _cpu(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def run_benchmark(workdir: Path, *, total_bytes: int = 2 * 10**9, files: int = 20,
                  rounds: int = 3, media: str = "bd25", xorriso: str = "xorriso") -> dict:
    """Time both builders ``rounds`` times each, alternating; return the figures."""
    src = workdir / "vault"
    out = workdir / "out"
    out.mkdir(parents=True, exist_ok=True)
    t = time.monotonic()
    recs = make_sources(src, total_bytes, files)
    prep = time.monotonic() - t
    plan = plan_discs(recs, medium_by_key(media), station="bench", serial=1, year=2024)
    if len(plan.discs) != 1:
        raise SystemExit(f"{total_bytes} bytes do not fit on one {media} disc; choose --media")
    disc = plan.discs[0]
    sessions = {sid: RecordSession(sid, officers=("张三",)) for sid in disc.session_ids}

    ours: list[float] = []
    ours_cpu: list[float] = []
    theirs: list[float] = []
    theirs_cpu: list[float] = []
    theirs_nosync: list[float] = []
    equal_work: list[float] = []
    image_size = 0
    reread = 0
    load_before = os.getloadavg()
    for r in range(rounds):
        for which in (("ours", "xorriso") if r % 2 == 0 else ("xorriso", "ours")):
            os.sync()
            if which == "ours":
                target = out / "ours.iso"
                cpu = _cpu(resource.RUSAGE_SELF)
                start = time.perf_counter()
                result = build_image(disc, target, sessions=sessions, station_name="基准测试站",
                                     audit_chain_head="0" * 64)
                ours.append(time.perf_counter() - start)
                ours_cpu.append(_cpu(resource.RUSAGE_SELF) - cpu)
                image_size = result.size
                reread = result.reread_bytes
            else:
                target = out / "xorriso.iso"
                argv = [xorriso, "-as", "mkisofs", "-quiet", "-iso-level", "3", "-R", "-J",
                        "-joliet-long", "-V", "BENCH", "-o", str(target), "-graft-points"]
                argv += [f"{_graft(rec.disc_path)}={rec.vault_path}" for rec in disc.recordings]
                cpu = _cpu(resource.RUSAGE_CHILDREN)
                start = time.perf_counter()
                subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                mid = time.perf_counter()
                theirs_cpu.append(_cpu(resource.RUSAGE_CHILDREN) - cpu)
                _fsync_file(target)
                theirs.append(time.perf_counter() - start)
                theirs_nosync.append(mid - start)
                # The same guarantees with xorriso: hash every source and the image too.
                for rec in disc.recordings:
                    _sha256_file(rec.vault_path)
                _sha256_file(target)
                equal_work.append(time.perf_counter() - start)
            os.chmod(target, 0o644)
            target.unlink()
    load_after = os.getloadavg()

    t_ours = statistics.median(ours)
    t_theirs = statistics.median(theirs)
    return {
        "bytes": total_bytes,
        "files": files,
        "rounds": rounds,
        "media": media,
        "image_bytes": image_size,
        "burner_seconds": [round(x, 3) for x in ours],
        "xorriso_seconds": [round(x, 3) for x in theirs],
        "xorriso_seconds_without_fsync": [round(x, 3) for x in theirs_nosync],
        "burner_median_s": round(t_ours, 3),
        "xorriso_median_s": round(t_theirs, 3),
        "burner_MB_per_s": round(total_bytes / t_ours / 1e6, 1),
        "xorriso_MB_per_s": round(total_bytes / t_theirs / 1e6, 1),
        "ratio": round(t_theirs / t_ours, 3),
        "ratio_without_xorriso_fsync": round(statistics.median(theirs_nosync) / t_ours, 3),
        "xorriso_plus_sha256_seconds": [round(x, 3) for x in equal_work],
        "ratio_equal_work": round(statistics.median(equal_work) / t_ours, 3),
        "burner_cpu_seconds": [round(x, 3) for x in ours_cpu],
        "xorriso_cpu_seconds": [round(x, 3) for x in theirs_cpu],
        "loadavg_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "goal": "ratio >= 1.0 (burner at least as fast as xorriso)",
        "burner_reread_bytes": reread,
        "source_prep_seconds": round(prep, 1),
        "cpus": os.cpu_count(),
        "notes": "burner: ISO 9660 L3 + Joliet + Rock Ridge + UDF 2.60, source SHA-256 checks, "
                 "image SHA-256, PDF form; xorriso: ISO 9660 L3 + Rock Ridge + Joliet only. "
                 "ratio_equal_work adds to xorriso's time a SHA-256 of every source and of its "
                 "image, the checks the burner does while writing.",
    }


def main(argv: list[str] | None = None) -> int:
    from appliance.config import parse_size

    parser = argparse.ArgumentParser(
        prog="appliance bench burn",
        description="Time building a disc image against xorriso -as mkisofs on the same files.")
    parser.add_argument("--size", default="2GB", help="total size of the recordings (default 2GB)")
    parser.add_argument("--files", type=int, default=20, help="number of recordings (default 20)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each builder (default 3)")
    parser.add_argument("--media", default="bd25", help="medium to plan for (default bd25)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="work folder (default: a new folder in /var/tmp, removed afterwards)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--xorriso", default="xorriso")
    args = parser.parse_args(argv)
    try:
        total = parse_size(args.size)
    except ValueError as exc:
        parser.error(str(exc))
    if args.files < 1 or args.rounds < 1:
        parser.error("--files and --rounds must be at least 1")
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="bench-burn-", dir="/var/tmp"))
    try:
        result = run_benchmark(workdir, total_bytes=total, files=args.files, rounds=args.rounds,
                               media=args.media, xorriso=args.xorriso)
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    json.dump(result, sys.stdout, ensure_ascii=False, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
