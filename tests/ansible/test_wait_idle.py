"""The upgrade's wait before a restart, against a real daemon whose slot is busy.

A camera that stalls in the middle of a recording (tests/support/faultfs.py, ``hang_after``)
keeps its slot copying for as long as the test wants: the station role's ``wait_idle.yml`` must keep
waiting, fail when its time is up, and go on only once the copy has finished.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from appliance.dock.control import send_request
from tests.monitoring.support import ApplianceProcess, http_get, wait_until

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = REPO / "tests" / "ansible" / "wait-idle.yml"


def _wait_idle(health_url: str, timeout: int, poll: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(REPO / "ansible" / "roles"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_LOCALHOST_WARNING": "false", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false"}
    return subprocess.run(
        ["ansible-playbook", "-i", "localhost,", str(PLAYBOOK), "-e", f"station_health_url={health_url}",
         "-e", f"station_idle_timeout={timeout}", "-e", f"station_idle_poll={poll}"],
        capture_output=True, text=True, timeout=300, env=env, cwd=REPO)


def _health(box: ApplianceProcess) -> dict:
    status, body = http_get(box.url("/api/v1/health"))
    assert status == 200
    return json.loads(body)


def test_the_upgrade_waits_while_a_slot_is_copying_and_goes_on_after(tmp_path, fault_fs):
    if shutil.which("ansible-playbook") is None:
        pytest.skip("ansible-playbook is not installed (scripts/setup --test installs Debian's ansible)")
    camera = tmp_path / "camera"
    (camera / "DCIM" / "100MEDIA").mkdir(parents=True)
    (camera / "DEVICE.TXT").write_text("SERIAL=WAIT0001\n")
    clip = os.urandom(3 << 20)
    (camera / "DCIM" / "100MEDIA" / "执法_0001.MP4").write_bytes(clip)
    box = ApplianceProcess(tmp_path / "box", station="st-wait")
    box.cli("device", "add", "WAIT0001", "--officer", "王强")
    box.start()
    fs = fault_fs(camera, hang_after={"DCIM/100MEDIA/执法_0001.MP4": 1 << 20})
    try:
        reply = asyncio.run(send_request(box.root / "state" / "dock.sock",
                                         {"action": "attach", "slot": 1, "source": str(fs.path)}))
        assert reply == {"ok": True}, reply
        wait_until(lambda: _health(box)["busy"] == ["1"], 30, "slot 1 busy")

        busy = _wait_idle(box.url("/api/v1/health"), timeout=6, poll=2)
        assert busy.returncode != 0, busy.stdout
        assert busy.stdout.count("FAILED - RETRYING: [localhost]: Wait until no slot is copying") >= 2, busy.stdout
        assert _health(box)["busy"] == ["1"]  # nothing was restarted or cut short

        fs.plug()  # the stalled reads complete; the copy finishes
        idle = _wait_idle(box.url("/api/v1/health"), timeout=120, poll=1)
        assert idle.returncode == 0, idle.stdout + idle.stderr
        assert _health(box)["busy"] == []
        report = box.cli("verify")
        assert "OK" in report, report
        recorded = list((box.root / "vault" / "media").rglob("执法_0001.MP4"))
        assert len(recorded) == 1 and hashlib.sha256(recorded[0].read_bytes()).hexdigest() == \
            hashlib.sha256(clip).hexdigest()
    finally:
        fs.plug()
        box.stop()
