"""The command line: clear one-line errors and exit codes."""

import sqlite3
import subprocess
import sys

import yaml


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "appliance", *args], capture_output=True, text=True, env=env)


def test_check_config_accepts_the_default_and_names_a_bad_key(tmp_path):
    ok = run("check-config", "--config", "config.yaml")
    assert ok.returncode == 0 and "OK" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("web:\n  port: 99999\n")
    out = run("check-config", "--config", str(bad))
    assert out.returncode == 3
    assert f"{bad}: web.port" in out.stderr and "Traceback" not in out.stderr


def test_config_comes_from_the_environment(tmp_path):
    import os
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"vault": {"path": str(tmp_path / "v")}, "state_dir": str(tmp_path)}))
    out = run("check-config", env={**os.environ, "APPLIANCE_CONFIG": str(cfg)})
    assert out.returncode == 0 and str(cfg) in out.stdout


def test_device_add_and_a_broken_audit_chain(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"vault": {"path": str(tmp_path / "v")}, "state_dir": str(tmp_path)}))
    assert run("device", "add", "SN1", "--officer", "王强", "--model", "DSJ-X", "--config", str(cfg)).returncode == 0
    listed = run("device", "list", "--config", str(cfg))
    assert "SN1" in listed.stdout and "王强" in listed.stdout
    assert run("audit", "verify", "--config", str(cfg)).returncode == 0
    conn = sqlite3.connect(tmp_path / "v" / "catalog" / "catalog.sqlite")
    conn.execute("DROP TRIGGER audit_log_no_update")
    conn.execute("UPDATE audit_log SET actor = 'someone' WHERE seq = 1")
    conn.commit()
    conn.close()
    out = run("audit", "verify", "--config", str(cfg))
    assert out.returncode == 4 and "row 1" in out.stderr


def test_bench_ingest_prints_the_throughputs_and_their_ratios(tmp_path):
    import json
    out = run("bench", "ingest", "--slots", "2", "--size", "8MiB", "--files", "2", "--dir", str(tmp_path))
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert result["ingested_bytes"] == 2 * 8 * 2**20
    assert result["ratio_ingest_vs_cp"] > 0 and result["cp_sync_MBps"] > 0
    assert result["ratio_ingest_vs_io_floor"] > 0 and result["io_floor_MBps"] > 0
    assert list(tmp_path.iterdir()) == []  # the benchmark cleans up after itself
