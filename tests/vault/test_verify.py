"""`appliance verify` names every file that differs, is missing or is new."""

import os
import subprocess
import sys

import pytest
import yaml

from appliance.vault.verify import verify_vault
from tests.dock.test_session import camera


async def _ingested(harness, tmp_path):
    harness.register("CAM001")
    result = await harness.ingest(1, camera(tmp_path / "cam"))
    assert result.result == "done"
    return harness.rows("SELECT * FROM recordings ORDER BY rel_path")


def _writable(path):
    os.chmod(path.parent, 0o755)
    os.chmod(path, 0o644)


async def test_clean_vault_verifies(harness, tmp_path):
    await _ingested(harness, tmp_path)
    report = verify_vault(harness.catalog, harness.appliance.vault)
    assert report.ok and report.files_checked == 3 and report.problems == []
    assert harness.rows("SELECT problems FROM verify_runs")[0]["problems"] == 0


async def test_altered_missing_new_and_manifest_problems_are_named(harness, tmp_path):
    recs = await _ingested(harness, tmp_path)
    vault = harness.appliance.vault
    altered = vault.root / recs[0]["vault_path"]
    _writable(altered)
    with open(altered, "r+b") as fh:
        fh.write(b"X")
    gone = vault.root / recs[1]["vault_path"]
    _writable(gone)
    gone.unlink()
    (gone.parent / "inserted.mp4").write_bytes(b"planted")
    report = verify_vault(harness.catalog, vault)
    kinds = {(p.kind, os.path.basename(p.path)) for p in report.problems}
    assert ("differs", os.path.basename(recs[0]["vault_path"])) in kinds
    assert ("missing", os.path.basename(recs[1]["vault_path"])) in kinds
    assert ("new", "inserted.mp4") in kinds
    assert not report.ok


async def test_verify_command_exits_nonzero_and_names_the_file(harness, tmp_path):
    recs = await _ingested(harness, tmp_path)
    config = harness.appliance.config
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"state_dir": str(config.state_dir),
                                   "vault": {"path": str(config.vault.path)}}))
    ok = subprocess.run([sys.executable, "-m", "appliance", "verify", "--config", str(cfg)],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    target = harness.appliance.vault.root / recs[2]["vault_path"]
    _writable(target)
    target.write_bytes(b"replaced")
    bad = subprocess.run([sys.executable, "-m", "appliance", "verify", "--config", str(cfg)],
                         capture_output=True, text=True)
    assert bad.returncode == 1
    assert "DIFFERS" in bad.stdout and recs[2]["vault_path"] in bad.stdout
