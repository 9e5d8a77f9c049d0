"""The status API and /metrics served by the running daemon's web listener."""

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from appliance.daemon import Appliance
from tests.support.appliance import Harness, make_config


async def test_slots_health_and_metrics_over_http(tmp_path):
    config = make_config(tmp_path, web={"host": "127.0.0.1", "port": 0})
    appliance = Appliance(config)
    await appliance.start(udev=False)
    try:
        h = Harness(appliance)
        h.register("CAM9")
        cam = tmp_path / "cam" / "DCIM"
        cam.mkdir(parents=True)
        (cam / "a.mp4").write_bytes(b"x" * 5000)
        (tmp_path / "cam" / "DEVICE.TXT").write_text("SN=CAM9\n")
        h.dock(2, tmp_path / "cam")
        import asyncio
        await asyncio.sleep(0)
        await appliance.wait_idle()
        await appliance.refresh_space()
        base = f"http://127.0.0.1:{appliance.bound_port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(base + "/api/v1/slots") as r:
                slots = (await r.json())["slots"]
            async with http.get(base + "/api/v1/health") as r:
                health = await r.json()
            async with http.get(base + "/metrics") as r:
                text = await r.text()
    finally:
        await appliance.stop()
    assert [s["slot"] for s in slots] == ["1", "2", "3", "4"]
    tile = slots[1]
    assert tile["state"] == "done" and tile["officer"] == "张伟" and tile["progress"] == 1.0
    assert tile["state_zh"] == "完成，可以拔出"
    assert "files" not in tile  # the board never lists recordings
    assert health["status"] == "ok" and health["vault"]["free_bytes"] > 0 and health["busy"] == []
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(text) for s in fam.samples}
    assert samples[("appliance_ingest_files_total", (("result", "verified"),))] == 1
    assert samples[("appliance_ingest_bytes_total", (("result", "verified"),))] == 5000
    assert samples[("appliance_ingest_sessions_total", (("result", "done"),))] == 1
    assert samples[("appliance_slot_state", (("slot", "2"), ("state", "done")))] == 1
    assert samples[("appliance_vault_free_bytes", ())] > 0
    assert ("appliance_ingest_duration_seconds_count", ()) in samples
