"""`appliance burn` and `appliance disc verify` as real processes on a real ingested vault."""

import sqlite3
import subprocess
import sys

import yaml

from appliance.daemon import Appliance
from appliance.vault.base import open_folders
from tests.dock.test_session import camera
from tests.support.appliance import Harness, make_config


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "appliance", *args], capture_output=True, text=True,
                          timeout=600)


async def test_burn_all_to_a_pseudo_drive_then_verify_the_disc(tmp_path):
    drive = f"stdio:{tmp_path / 'drive.iso'}"
    config = make_config(tmp_path, burner={"drives": [drive], "medium": "cd"})
    appliance = Appliance(config)
    await appliance.start(udev=False, web_listener=False)
    try:
        h = Harness(appliance)
        h.register("CAM001")
        assert (await h.ingest(1, camera(tmp_path / "cam"))).result == "done"
    finally:
        await appliance.stop()
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude={"source"}), allow_unicode=True))

    plan = _cli("burn", "--all", "--dry-run", "--config", str(cfg))
    assert plan.returncode == 0, plan.stderr
    assert "1 × cd" in plan.stdout and "demo-" in plan.stdout and "3 recordings" in plan.stdout
    assert not (tmp_path / "drive.iso").exists()

    burned = _cli("burn", "--all", "--config", str(cfg))
    assert burned.returncode == 0, burned.stdout + burned.stderr[-2000:]
    assert "verified" in burned.stdout
    iso = next((config.state_dir / "pseudo-discs").glob("*.iso"))
    checked = _cli("disc", "verify", str(iso))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "OK" in checked.stdout and "audit chain head" in checked.stdout

    conn = sqlite3.connect(config.catalog_path)
    discs = conn.execute("SELECT state FROM discs").fetchall()
    actions = [r[0] for r in conn.execute("SELECT action FROM audit_log")]
    conn.close()
    assert discs == [("verified",)]
    assert any(a.startswith("burn") or a.startswith("disc") for a in actions)
    open_folders(tmp_path)


def test_burn_refuses_an_unknown_medium_with_a_clear_line(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"vault": {"path": str(tmp_path / "v")}, "state_dir": str(tmp_path / "s")}))
    out = _cli("burn", "--all", "--media", "floppy", "--dry-run", "--config", str(cfg))
    assert out.returncode != 0 and "Traceback" not in out.stderr
