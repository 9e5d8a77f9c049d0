"""Kill the daemon with SIGKILL at random moments of an ingest; nothing is ever lost or faked.

After every kill the daemon is restarted and the vault and catalog are checked: every
recording and every verified-but-uncommitted file exists in the vault with the hash the
catalog gives; no temporary file survives start-up; the audit chain holds. Re-docking
continues the session until every camera file is recorded exactly once.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from appliance.catalog import audit
from appliance.catalog.db import Catalog
from appliance.dock.control import send_request
from appliance.vault.base import open_folders
from appliance.vault.copier import PARTIAL_PREFIX

KILLS = 24
FILES = 24
FILE_SIZE = 6 << 20


def _add_clips(root: Path, first: int, count: int, expected: dict[str, str]) -> None:
    """New recordings on the camera, as after another shift: there is always work to kill."""
    media = root / "DCIM" / "100MEDIA"
    media.mkdir(parents=True, exist_ok=True)
    (root / "DEVICE.TXT").write_text("SERIAL=CRASH01\n")
    for i in range(first, first + count):
        data = os.urandom(FILE_SIZE // (1 + i % 3))
        (media / f"片段_{i:03d}.MP4").write_bytes(data)
        expected[f"DCIM/100MEDIA/片段_{i:03d}.MP4"] = hashlib.sha256(data).hexdigest()


def _config(tmp: Path) -> Path:
    config = {
        "state_dir": str(tmp / "state"),
        "vault": {"backend": "directory", "path": str(tmp / "vault"), "reserve": 0},
        "web": {"host": "127.0.0.1", "port": 0},
        "dock": {"slots": {1: "p1"}, "mount_root": str(tmp / "mnt"), "udev": False,
                 "io_concurrency": 2, "block_size": "1MiB"},
        "ingest": {"ffprobe": False},
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    return path


class Daemon:
    def __init__(self, config: Path, log: Path) -> None:
        self.config, self.log = config, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        sock = Path(yaml.safe_load(self.config.read_text())["state_dir"]) / "dock.sock"
        if sock.exists():
            sock.unlink()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "appliance", "run", "--config",
                                          str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while not sock.exists():
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, "daemon did not start"
            time.sleep(0.05)

    def attach(self, source: Path) -> None:
        sock = Path(yaml.safe_load(self.config.read_text())["state_dir"]) / "dock.sock"
        reply = asyncio.run(send_request(sock, {"action": "attach", "slot": 1, "source": str(source)}))
        assert reply == {"ok": True}, reply

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def _check_consistent(vault: Path) -> tuple[set[str], str | None]:
    """Every catalogued file verifies; returns the recorded paths and the last session state."""
    leftovers = [p for p in vault.rglob(PARTIAL_PREFIX + "*")]
    assert not leftovers, f"temporary files survived start-up: {leftovers}"
    conn = sqlite3.connect(vault / "catalog" / "catalog.sqlite")
    conn.row_factory = sqlite3.Row
    recorded = set()
    for table in ("recordings", "session_files"):
        for row in conn.execute(f"SELECT rel_path, vault_path, sha256, size FROM {table}"):
            data = (vault / row["vault_path"]).read_bytes()
            assert len(data) == row["size"], row["rel_path"]
            assert hashlib.sha256(data).hexdigest() == row["sha256"], row["rel_path"]
            if table == "recordings":
                assert row["rel_path"] not in recorded, f"recorded twice: {row['rel_path']}"
                recorded.add(row["rel_path"])
    states = conn.execute("SELECT state FROM sessions ORDER BY started_at DESC").fetchall()
    active = [s["state"] for s in states if s["state"] not in ("done", "failed", "interrupted")]
    conn.close()
    catalog = Catalog(vault / "catalog" / "catalog.sqlite")
    try:
        assert catalog.run(audit.verify_chain).ok
    finally:
        catalog.close()
    return recorded, (states[0]["state"] if states else None), active


def _wait_for_active_session(vault: Path, timeout: float = 20) -> None:
    """Until the catalog shows a session between docking and its end (read-only, like a reader)."""
    deadline = time.monotonic() + timeout
    uri = f"file:{vault / 'catalog' / 'catalog.sqlite'}?mode=ro"
    while time.monotonic() < deadline:
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=1)
            try:
                active = conn.execute("SELECT count(*) FROM sessions WHERE state NOT IN "
                                      "('done', 'failed', 'interrupted')").fetchone()[0]
            finally:
                conn.close()
        except sqlite3.OperationalError:
            active = 0
        if active:
            return
        time.sleep(0.01)


@pytest.mark.slow
def test_sigkill_at_random_points_loses_nothing(tmp_path):
    rng = random.Random(int(os.environ.get("CRASH_SEED", "20261127")))
    expected: dict[str, str] = {}
    _add_clips(tmp_path / "cam", 0, FILES, expected)
    config = _config(tmp_path)
    daemon = Daemon(config, tmp_path / "daemon.log")
    vault = tmp_path / "vault"
    from appliance.catalog import registry
    setup = Catalog(vault / "catalog" / "catalog.sqlite")
    setup.run(registry.add_device, "CRASH01", officer="王强")
    setup.close()
    kills_done = 0
    try:
        for round_ in range(KILLS):
            daemon.start()
            recorded, _, active = _check_consistent(vault)
            assert not active, f"start-up left sessions active: {active}"
            _add_clips(tmp_path / "cam", FILES + 3 * round_, 3, expected)
            daemon.attach(tmp_path / "cam")
            if round_ % 2:
                # Half the kills land anywhere, half early inside a session that is under
                # way: a round's new clips copy in tens of milliseconds, so on a loaded
                # machine a blind delay keeps missing the copy altogether.
                _wait_for_active_session(vault)
                time.sleep(rng.uniform(0.0, 0.05))
            else:
                time.sleep(rng.uniform(0.0, 0.5))
            daemon.kill()
            kills_done += 1
        daemon.start()
        daemon.attach(tmp_path / "cam")
        deadline = time.monotonic() + 120
        while True:
            recorded, last, _ = _check_consistent(vault)
            if recorded == set(expected) and last == "done":
                break
            assert time.monotonic() < deadline, f"not finished: {len(recorded)}/{len(expected)}, {last}"
            time.sleep(0.3)
        conn = sqlite3.connect(vault / "catalog" / "catalog.sqlite")
        hashes = dict(conn.execute("SELECT rel_path, sha256 FROM recordings"))
        conn.close()
        assert hashes == expected
        # The kills really landed mid-ingest, not only between sessions.
        log = (tmp_path / "daemon.log").read_text()
        interrupted = log.count("recovered session")
        assert interrupted >= KILLS // 3, f"only {interrupted} kills hit a running session"
    finally:
        daemon.stop()
        open_folders(tmp_path)
    assert kills_done == KILLS
