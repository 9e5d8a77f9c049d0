"""``appliance bench ingest``: the real ingest pipeline against ``cp -r`` + ``sync``.

Both runs copy the same camera sources to the same file system in the same command.
The sources are plain folders on that file system, so the figure measures the
appliance (copy, hash, fsync, read-back verify, catalog) and not a USB link. Page-cache
state is made equal for both: the sources are read once before each run, and the
destination's caches are dropped where the kernel lets us.

``cp`` + ``sync`` writes each byte to the disk once; a verified ingest must also read it
back from the disk. So a third run, the *I/O floor*, does only that disk work with
``dd`` (each file written with ``oflag=direct`` and fsynced, then read back with
``iflag=direct``, one stream per slot): no hashing, no catalog. ``ratio_ingest_vs_io_floor``
near 1 means the pipeline costs nothing beyond the disk traffic a read-back demands;
where the disk reads no faster than it writes, that floor alone is about half of
``cp`` + ``sync``'s speed.
"""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from appliance.catalog import registry
from appliance.config import Config, parse_config
from appliance.daemon import Appliance
from appliance.dock.events import DockAction, DockEvent, SourceKind
from appliance.metrics import SessionFinished
from appliance.vault.base import open_folders

CHUNK = 16 << 20


def make_sources(root: Path, slots: int, size: int, files: int) -> list[Path]:
    """``slots`` camera folders of ``size`` bytes each, in ``files`` incompressible files."""
    pattern = os.urandom(CHUNK)
    sources = []
    for slot in range(1, slots + 1):
        media = root / f"cam{slot}" / "DCIM" / "100MEDIA"
        media.mkdir(parents=True)
        (root / f"cam{slot}" / "DEVICE.TXT").write_text(f"SERIAL=BENCH{slot:03d}\n")
        per_file = size // files
        for i in range(files):
            with open(media / f"CLIP{i:04d}.MP4", "wb") as fh:
                left = per_file
                # A different prefix per file keeps every file's content unique.
                fh.write(f"{slot}-{i}".encode().ljust(4096, b"\0"))
                left -= 4096
                while left > 0:
                    n = min(left, CHUNK)
                    fh.write(pattern[:n])
                    left -= n
        sources.append(root / f"cam{slot}")
    subprocess.run(["sync"], check=True)
    return sources


def _warm(sources: list[Path]) -> None:
    for src in sources:
        for path in src.rglob("*"):
            if path.is_file():
                with open(path, "rb") as fh:
                    while fh.read(CHUNK):
                        pass


def _drop_caches() -> bool:
    try:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
        return True
    except OSError:
        return False


def _cpu_seconds(children: bool = False) -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def time_cp(sources: list[Path], dest: Path) -> float:
    """Seconds for parallel ``cp -r`` of every source, then ``sync``."""
    dest.mkdir(parents=True)
    started = time.perf_counter()
    procs = [subprocess.Popen(["cp", "-r", str(src), str(dest / src.name)]) for src in sources]
    for p in procs:
        if p.wait() != 0:
            raise RuntimeError("cp failed")
    subprocess.run(["sync"], check=True)
    return time.perf_counter() - started


def time_io_floor(sources: list[Path], dest: Path, block_size: int) -> float:
    """Seconds for the disk work of a verified copy alone: per slot in parallel, each file
    written with O_DIRECT and fsynced, then read back with O_DIRECT (``dd``)."""
    dest.mkdir(parents=True)
    started = time.perf_counter()
    procs = []
    for src in sources:
        files = sorted(p for p in src.rglob("*") if p.is_file())
        # dd turns O_DIRECT off by itself for a last block that is not aligned.
        script = "set -e\n" + "".join(
            f'dd if="$1/{i}" of="$2/{i}" bs={block_size} oflag=direct conv=fsync status=none\n'
            f'dd if="$2/{i}" of=/dev/null bs={block_size} iflag=direct status=none\n'
            for i in range(len(files)))
        links = dest / f"{src.name}.src"
        links.mkdir()
        for i, f in enumerate(files):
            (links / str(i)).symlink_to(f)
        out = dest / src.name
        out.mkdir()
        procs.append(subprocess.Popen(["sh", "-c", script, "floor", str(links), str(out)]))
    for p in procs:
        if p.wait() != 0:
            raise RuntimeError("dd failed")
    return time.perf_counter() - started


async def time_ingest(sources: list[Path], work: Path, io_concurrency: int,
                      base: Config | None = None) -> tuple[float, int]:
    """Seconds for the appliance to ingest every source through the real pipeline."""
    base = base or Config()
    config = parse_config({
        "state_dir": str(work / "state"),
        "vault": {"backend": "directory", "path": str(work / "vault"), "reserve": 0},
        "dock": {"slots": {i: f"bench-{i}" for i in range(1, len(sources) + 1)},
                 "mount_root": str(work / "mnt"), "udev": False, "io_concurrency": io_concurrency,
                 "block_size": base.dock.block_size},
        "ingest": {"ffprobe": False, "hashes": list(base.ingest.hashes)},
    })
    appliance = Appliance(config)
    for i in range(1, len(sources) + 1):
        appliance.catalog.run(registry.add_device, f"BENCH{i:03d}", officer=f"bench{i}")
    finished: list[SessionFinished] = []
    appliance.bus.subscribe(lambda e: finished.append(e) if isinstance(e, SessionFinished) else None)
    await appliance.start(udev=False, web_listener=False)
    try:
        started = time.perf_counter()
        for slot, src in enumerate(sources, start=1):
            appliance.dock(DockEvent(DockAction.ADD, slot, f"bench-{slot}", src, SourceKind.DIRECTORY))
        await asyncio.sleep(0)
        await appliance.wait_idle()
        seconds = time.perf_counter() - started
    finally:
        await appliance.stop()
    bad = [f for f in finished if f.result != "done"]
    if bad:
        raise RuntimeError(f"ingest failed: {bad}")
    return seconds, sum(f.bytes for f in finished)


def run_bench(slots: int = 4, size: int = 1 << 30, workdir: Path | None = None,
              files_per_slot: int = 8, io_concurrency: int | None = None,
              config: Config | None = None) -> dict:
    """Run both and return the figures (bytes per second and the ratio ingest / cp)."""
    work = Path(tempfile.mkdtemp(prefix="appliance-bench-", dir=workdir or "/var/tmp"))
    try:
        sources = make_sources(work / "src", slots, size, files_per_slot)
        total = sum(f.stat().st_size for s in sources for f in s.rglob("*") if f.is_file())
        dropped = _drop_caches()
        _warm(sources)
        cpu_before = _cpu_seconds()
        ingest_s, ingested = asyncio.run(time_ingest(sources, work / "ingest", io_concurrency or slots,
                                                     config))
        ingest_cpu = _cpu_seconds() - cpu_before
        open_folders(work / "ingest")
        shutil.rmtree(work / "ingest", ignore_errors=True)
        _drop_caches()
        _warm(sources)
        cpu_before = _cpu_seconds(children=True)
        cp_s = time_cp(sources, work / "cp")
        cp_cpu = _cpu_seconds(children=True) - cpu_before
        shutil.rmtree(work / "cp", ignore_errors=True)
        _drop_caches()
        _warm(sources)
        floor_s = time_io_floor(sources, work / "floor", (config or Config()).dock.block_size)
        return {
            "slots": slots, "bytes": total, "ingested_bytes": ingested,
            "ingest_seconds": round(ingest_s, 3), "cp_sync_seconds": round(cp_s, 3),
            "ingest_MBps": round(total / ingest_s / 1e6, 1), "cp_sync_MBps": round(total / cp_s / 1e6, 1),
            "io_floor_seconds": round(floor_s, 3), "io_floor_MBps": round(total / floor_s / 1e6, 1),
            "ratio_ingest_vs_cp": round(cp_s / ingest_s, 3),
            "ratio_ingest_vs_io_floor": round(floor_s / ingest_s, 3),
            "ratio_io_floor_vs_cp": round(cp_s / floor_s, 3), "page_cache_dropped": dropped,
            # CPU seconds per GB: robust when other work shares the machine.
            "ingest_cpu_s_per_GB": round(ingest_cpu / (total / 1e9), 2),
            "cp_cpu_s_per_GB": round(cp_cpu / (total / 1e9), 2),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "goal": ">= 0.9",
        }
    finally:
        open_folders(work)
        shutil.rmtree(work, ignore_errors=True)
