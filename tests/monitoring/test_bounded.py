"""The metric set stays bounded: thousands of recordings and hundreds of devices add no series."""

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from appliance.catalog import registry
from appliance.dock.events import SourceKind

pytestmark = pytest.mark.slow
DEVICES = 300
SESSIONS = 24
FILES_PER_SESSION = 100  # 2,400 recordings


def series(appliance) -> set[tuple]:
    text = appliance.metrics.render().decode()
    return {(s.name, tuple(sorted(s.labels.items())))
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def camera(folder, serial: str, n: int):
    (folder / "DCIM").mkdir(parents=True)
    (folder / "DEVICE.TXT").write_text(f"SN={serial}\n")
    for i in range(n):
        (folder / "DCIM" / f"{serial}_{i:04d}.MP4").write_bytes(f"{serial}/{i}".encode() * 64)
    return folder


async def collect(appliance):
    for name in ("vault", "verify", "devices", "snapshots", "audit_chain"):
        assert await appliance.monitor.run(name), name


async def test_series_do_not_grow_with_recordings_or_devices(harness, tmp_path):
    app = harness.appliance

    def register_all(conn):
        for n in range(DEVICES):
            registry.add_device(conn, f"CAM{n:04d}", officer=f"警员{n % 50}", model="DSJ-T")

    app.catalog.run(register_all)
    # one session of each kind first: every label value that events can bring is there
    await harness.ingest(1, camera(tmp_path / "first", "CAM0000", 2))
    await harness.ingest(2, camera(tmp_path / "stranger", "NOBODY", 1))  # quarantined
    await harness.ingest(3, tmp_path / "missing", SourceKind.IMAGE)        # failed
    await collect(app)
    before = series(app)

    t0 = time.monotonic()
    for n in range(1, SESSIONS + 1):
        await harness.ingest(1 + n % 4, camera(tmp_path / f"cam{n}", f"CAM{n:04d}", FILES_PER_SESSION))
    ingest_s = time.monotonic() - t0
    await collect(app)
    after = series(app)

    recordings = harness.rows("SELECT COUNT(*) AS n FROM recordings")[0]["n"]
    devices = harness.rows("SELECT COUNT(*) AS n FROM devices")[0]["n"]
    assert recordings >= SESSIONS * FILES_PER_SESSION and devices == DEVICES
    grown = after - before
    assert not grown, f"new series after {recordings} recordings and {devices} devices: {sorted(grown)[:10]}"
    appliance_series = {s for s in after if s[0].startswith("appliance_")}
    assert len(appliance_series) < 400, len(appliance_series)
    t0 = time.perf_counter()
    body = app.metrics.render()
    render_ms = (time.perf_counter() - t0) * 1000
    print(f"{recordings} recordings ({ingest_s:.1f} s of ingest), {devices} devices: "
          f"{len(after)} series ({len(appliance_series)} appliance_*), {len(body)} bytes, render {render_ms:.1f} ms")
    assert render_ms < 50
