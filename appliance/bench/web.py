"""``appliance bench web``: searching and listing a catalog of a million recordings.

Generates a catalog (officers, cameras, sessions, recordings over two years, cases,
long-term categories, tags) straight into SQLite, starts a real appliance on it, logs in
through the real web page, and times every kind of search the page offers, end to end
(HTTP request → access check → catalog → audit entry → rendered page). Reports p50, p95
and max per kind and over all; the target is p95 < 100 ms.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import sqlite3
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from appliance.config import parse_config
from appliance.vault.base import open_folders

TARGET_P95_MS = 100.0
OFFICERS = 200
DEVICES = 250
FILES_PER_SESSION = 8
CASES = 2000
PER_CASE = 25
TAGS = 50


def _config(workdir: Path):  # type: ignore[no-untyped-def]
    return parse_config({
        "state_dir": str(workdir / "state"),
        "vault": {"backend": "directory", "path": str(workdir / "vault"), "reserve": 0},
        "web": {"host": "127.0.0.1", "port": 0},
        "dock": {"slots": {1: "bench-port-1"}, "mount_root": str(workdir / "mnt"), "udev": False},
        "ingest": {"ffprobe": False},
    })


def generate(path: Path, recordings: int, seed: int = 7) -> dict:
    """Fill a migrated, empty catalog with ``recordings`` recordings. Returns what it made."""
    rnd = random.Random(seed)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA cache_size=-400000")
    started = time.monotonic()
    now = datetime(2026, 6, 1, tzinfo=timezone.utc)
    first = now - timedelta(days=730)
    iso = lambda dt: dt.isoformat(timespec="microseconds")  # noqa: E731
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO officers (id, name, created_at) VALUES (?, ?, ?)",
                     [(i, f"执法人员{i:03d}", iso(first)) for i in range(1, OFFICERS + 1)])
    conn.executemany("INSERT INTO devices (id, serial, brand, model, officer_id, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                     [(i, f"DSJ{i:05d}", "华德", "DSJ-V9", (i - 1) % OFFICERS + 1, iso(first))
                      for i in range(1, DEVICES + 1)])
    sessions = recordings // FILES_PER_SESSION
    step = (now - first) / max(1, sessions)

    def session_rows():
        for s in range(sessions):
            dev = rnd.randint(1, DEVICES)
            t = first + step * s
            yield (f"S{s:07d}", f"DSJ{dev:05d}", dev, (dev - 1) % OFFICERS + 1, "1", "generic", "done",
                   f"media/{t:%Y/%m/%d}/DSJ{dev:05d}/S{s:07d}", iso(t), iso(t), iso(t), "0" * 64,
                   round(rnd.uniform(-30, 30), 1))

    conn.executemany(
        "INSERT INTO sessions (id, device_serial, device_id, officer_id, slot, profile, state, vault_dir,"
        " started_at, updated_at, finished_at, manifest_sha256, clock_drift_s)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", session_rows())
    conn.execute("COMMIT")
    session_facts = conn.execute("SELECT id, device_serial, officer_id, started_at, vault_dir FROM sessions"
                                 " ORDER BY id").fetchall()

    def recording_rows():
        n = 0
        for sid, serial, officer, started, vault_dir in session_facts:
            t0 = datetime.fromisoformat(started) - timedelta(hours=8)
            for f in range(FILES_PER_SESSION):
                n += 1
                name = f"DCIM/{t0:%Y%m%d}/{serial}_{t0:%H%M%S}_{f:04d}.MP4"
                t = t0 + timedelta(minutes=5 * f)
                yield (n, sid, serial, officer, name.encode(), name, f"{vault_dir}/files/{name}",
                       rnd.randint(50_000_000, 900_000_000), int(t.timestamp() * 1e9), iso(t),
                       f"{n:064x}", iso(t), 300.0, "mov,mp4", "h264", 1920, 1080, iso(t))

    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO recordings (id, session_id, device_serial, officer_id, rel_path_raw, rel_path, vault_path,"
        " size, mtime_ns, camera_mtime, sha256, ingested_at, duration_s, format, codec, width, height, probed_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", recording_rows())
    total = conn.execute("SELECT MAX(id) FROM recordings").fetchone()[0] or 0
    keys = [r[0] for r in conn.execute("SELECT key FROM categories")]
    conn.executemany("INSERT INTO cases (id, number, title, category, created_at, created_by) VALUES (?, ?, ?, ?, ?, ?)",
                     [(c, f"农执〔{2025 + c % 2}〕{c}号", f"案件{c}", keys[c % len(keys)] if c % 3 == 0 else None,
                       iso(now), "bench") for c in range(1, CASES + 1)])
    conn.executemany("INSERT INTO tags (id, name) VALUES (?, ?)", [(t, f"标签{t}") for t in range(1, TAGS + 1)])
    at = dict(conn.execute("SELECT id, camera_mtime FROM recordings WHERE id % 7 = 0 OR id % 11 = 0"))
    linked = list(at)
    case_links, cat_links, tag_links = [], [], []
    for c in range(1, CASES + 1):
        start = rnd.randrange(0, max(1, len(linked) - PER_CASE))
        for rid in linked[start:start + PER_CASE]:
            case_links.append((c, rid, at[rid], iso(now), "bench"))
            if c % 3 == 0:
                cat_links.append((keys[c % len(keys)], rid, at[rid], iso(now), "bench"))
    for rid in linked[::2]:
        tag_links.append((rnd.randint(1, TAGS), rid, at[rid], iso(now), "bench"))
    conn.executemany("INSERT OR IGNORE INTO recording_cases VALUES (?, ?, ?, ?, ?)", case_links)
    conn.executemany("INSERT OR IGNORE INTO recording_categories VALUES (?, ?, ?, ?, ?)", cat_links)
    conn.executemany("INSERT OR IGNORE INTO recording_tags VALUES (?, ?, ?, ?, ?)", tag_links)
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()
    return {"recordings": total, "sessions": sessions, "officers": OFFICERS, "devices": DEVICES, "cases": CASES,
            "case_links": len(case_links), "category_links": len(cat_links), "tag_links": len(tag_links),
            "seconds": round(time.monotonic() - started, 1), "first": iso(first), "last": iso(now)}


def _queries(rnd: random.Random) -> dict[str, callable]:
    def officer() -> str:
        return f"officer={rnd.randint(1, OFFICERS)}"

    def device() -> str:
        return f"device=DSJ{rnd.randint(1, DEVICES):05d}"

    def week() -> str:
        d = datetime(2024, 7, 1) + timedelta(days=rnd.randint(0, 690))
        return f"from={d:%Y-%m-%d}&to={d + timedelta(days=6):%Y-%m-%d}"

    def deep() -> str:
        d = datetime(2024, 7, 1) + timedelta(days=rnd.randint(0, 690))
        return f"after={d:%Y-%m-%d}T00:00:00.000000%2B00:00|{rnd.randint(1, 10**6)}"

    return {
        "list (newest)": lambda: "",
        "list (deep page, cursor)": deep,
        "officer": officer,
        "device": device,
        "date range (a week)": week,
        "officer + date range": lambda: f"{officer()}&{week()}",
        "device + date range": lambda: f"{device()}&{week()}",
        "case": lambda: f"case={rnd.randint(1, CASES)}",
        "category": lambda: f"category={rnd.choice(['public_report', 'large_value', 'transfer', 'seizure', 'objection', 'major'])}",
        "tag": lambda: f"tag={rnd.randint(1, TAGS)}",
        "tag + date range": lambda: f"tag={rnd.randint(1, TAGS)}&{week()}",
        "case + officer": lambda: f"case={rnd.randint(1, CASES)}&{officer()}",
        "officer role (own only)": lambda: "",
    }


async def _measure(workdir: Path, queries: int) -> dict:
    from aiohttp.test_utils import TestClient, TestServer

    from appliance.catalog import users
    from appliance.daemon import Appliance
    from appliance.web.app import make_app

    config = _config(workdir)
    appliance = Appliance(config)
    await appliance.start(udev=False, web_listener=False)
    digest = users.hash_password("bench password")

    def accounts(conn):  # type: ignore[no-untyped-def]
        for name, role, officer in (("bench-dm", "device_manager", None), ("bench-officer", "officer", "执法人员007")):
            if users.credentials(conn, name) is None:
                users.add_user(conn, name, role, digest, officer=officer, actor="bench")

    appliance.catalog.run(accounts)
    server = TestServer(make_app(appliance))
    await server.start_server(access_log=None)
    rnd = random.Random(11)
    results: dict[str, list[float]] = {}
    try:
        clients = {}
        for name in ("bench-dm", "bench-officer"):
            client = TestClient(server)
            await client.start_server()
            page = await client.get("/login")
            import re
            token = re.search(r'name="csrf_token" value="([^"]+)"', await page.text()).group(1)
            resp = await client.post("/login", data={"csrf_token": token, "name": name, "password": "bench password"},
                                     allow_redirects=False)
            assert resp.status == 303, resp.status
            clients[name] = client
        for kind, make in _queries(rnd).items():
            client = clients["bench-officer" if kind.startswith("officer role") else "bench-dm"]
            await client.get("/recordings?" + make())          # warm
            times = []
            for _ in range(queries):
                url = "/recordings?" + make()
                t0 = time.perf_counter()
                resp = await client.get(url)
                body = await resp.read()
                times.append((time.perf_counter() - t0) * 1000)
                assert resp.status == 200 and b"<table" in body or b'class="empty"' in body, (url, resp.status)
            results[kind] = times
        for c in clients.values():
            await c.close()
    finally:
        await server.close()
        await appliance.stop()
    return results


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run_bench(*, recordings: int = 1_000_000, queries: int = 40, workdir: Path | None = None,
              keep: bool = False) -> dict:
    own = workdir is None
    workdir = workdir or Path(tempfile.mkdtemp(prefix="appliance-bench-web-", dir="/var/tmp"))
    workdir.mkdir(parents=True, exist_ok=True)
    config = _config(workdir)
    made = None
    try:
        from appliance.catalog.db import Catalog
        existing = 0
        if config.catalog_path.exists():
            probe = sqlite3.connect(config.catalog_path)
            try:
                existing = probe.execute("SELECT COUNT(*) FROM recordings").fetchone()[0]
            except sqlite3.Error:
                existing = 0
            probe.close()
        if existing != recordings - recordings % FILES_PER_SESSION:
            if config.vault.path.exists():
                shutil.rmtree(config.vault.path)
            config.vault.path.mkdir(parents=True)
            Catalog(config.catalog_path).close()       # migrations
            made = generate(config.catalog_path, recordings)
        results = asyncio.run(_measure(workdir, queries))
        every = [t for times in results.values() for t in times]
        per_kind = {k: {"p50_ms": round(statistics.median(v), 1), "p95_ms": round(_p(v, 0.95), 1),
                        "max_ms": round(max(v), 1)} for k, v in results.items()}
        p95 = _p(every, 0.95)
        worst = max(per_kind.values(), key=lambda x: x["p95_ms"])["p95_ms"]
        return {"recordings": recordings - recordings % FILES_PER_SESSION, "generated": made,
                "requests": len(every), "p50_ms": round(statistics.median(every), 1), "p95_ms": round(p95, 1),
                "worst_kind_p95_ms": worst, "target_p95_ms": TARGET_P95_MS,
                "ok": p95 < TARGET_P95_MS and worst < TARGET_P95_MS, "per_kind": per_kind,
                "measured": "end to end over HTTP: access check, catalog query, audit entry, rendered page",
                "machine": f"{os.cpu_count()} cores", "workdir": str(workdir) if keep or not own else None}
    finally:
        if own and not keep:
            _rmtree(workdir)


def _rmtree(path: Path) -> None:
    open_folders(path)  # the vault closes committed folders
    shutil.rmtree(path, ignore_errors=True)
