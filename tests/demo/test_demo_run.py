"""`appliance demo --once`: a newcomer's first run, end to end, as a real process."""

import json
import sqlite3
import subprocess
import sys

import yaml


def test_demo_once_ingests_every_camera_and_keeps_its_state(tmp_path):
    state = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "appliance", "demo", "--cameras", "3", "--once",
                           "--port", "0", "--state", str(state)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert proc.stdout.count("已校验 verified") == 3
    config = state / "config.yaml"
    assert yaml.safe_load(config.read_text())["vault"]["backend"] == "directory"
    conn = sqlite3.connect(state / "vault" / "catalog" / "catalog.sqlite")
    sessions = conn.execute("SELECT state, quarantined FROM sessions").fetchall()
    assert sessions == [("done", 0)] * 3
    chinese = conn.execute("SELECT count(*) FROM recordings WHERE rel_path LIKE '%执法记录%'").fetchone()[0]
    assert chinese == 3
    conn.close()
    # Later commands work on the kept state through its config.yaml.
    verify = subprocess.run([sys.executable, "-m", "appliance", "audit", "verify", "--config", str(config)],
                            capture_output=True, text=True)
    assert verify.returncode == 0 and "audit chain OK" in verify.stdout
    devices = subprocess.run([sys.executable, "-m", "appliance", "device", "list", "--config", str(config)],
                             capture_output=True, text=True)
    assert "DSJ0001" in devices.stdout and "张伟" in devices.stdout
