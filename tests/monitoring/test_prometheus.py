"""End to end: a real Prometheus (Debian's package) on loopback scrapes running appliances.

Station ``e2e-demo`` is ``appliance demo`` (simulated cameras docked every few seconds),
scraped on its web listener; station ``e2e-full`` is ``appliance run`` with a vault
reserve larger than the disk, scraped on its own metrics listener with a bearer token,
as headquarters would. Prometheus evaluates monitoring/alerts.yml every second. The test
sees the demo's ingested bytes rise through the HTTP API, runs ``promtool check metrics``
on scrapes taken during the demo's ingest, docks cameras on the full station and sees
ApplianceVaultFull, ApplianceIngestFailed and ApplianceUnknownCamera fire, and reads the
scrape durations Prometheus measured.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.parse

import pytest

from appliance.vault.base import open_folders
from tests.monitoring.support import (MONITORING, PYTHON, ROOT, ApplianceProcess, Prometheus,
                                      free_port, http_get, make_camera, stop_process, tool, wait_until)

pytestmark = pytest.mark.slow
TOKEN = "e2e-bearer-token-0123456789abcdef"
BUSY = ("docked", "identifying", "mounting", "copying", "verifying", "committing", "clock-sync", "wiping")


class Stack:
    demo_port: int
    demo: subprocess.Popen
    full: ApplianceProcess
    prometheus: Prometheus
    demo_scrapes: list[bytes]
    busy_scrapes: int


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tool("promtool")
    tool("prometheus")
    root = tmp_path_factory.mktemp("e2e")
    s = Stack()
    token = root / "metrics.token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    s.full = ApplianceProcess(root / "full", station="e2e-full", reserve="900TiB",
                              metrics={"listen": f"127.0.0.1:{free_port()}", "bearer_token_file": str(token)})
    s.full.cli("device", "add", "CAM-FULL", "--officer", "王强", "--model", "DSJ-T")
    s.demo_port = free_port()
    demo_log = root / "demo.log"
    s.demo = subprocess.Popen([PYTHON, "-m", "appliance", "demo", "--cameras", "2", "--state",
                               str(root / "demo"), "--port", str(s.demo_port)],
                              stdout=demo_log.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        s.full.start()
        listen = re.search(r"listen: (\S+)", s.full.config.read_text()).group(1)
        s.prometheus = Prometheus(root / "prometheus", [
            {"job_name": "appliance-demo", "static_configs": [
                {"targets": [f"127.0.0.1:{s.demo_port}"], "labels": {"station": "e2e-demo"}}],
             "relabel_configs": [{"target_label": "job", "replacement": "appliance"}]},
            {"job_name": "appliance", "authorization": {"credentials_file": str(token)},
             "static_configs": [{"targets": [listen], "labels": {"station": "e2e-full"}}]},
        ], [MONITORING / "alerts.yml"]).start()
        s.demo_scrapes, s.busy_scrapes = _scrape_demo_while_it_ingests(s.demo_port, demo_log)
        yield s
    finally:
        if hasattr(s, "prometheus"):
            s.prometheus.stop()
        s.full.stop()
        stop_process(s.demo)
        open_folders(root)


def _scrape_demo_while_it_ingests(port: int, log) -> tuple[list[bytes], int]:
    """Scrapes of the demo from its start until it has verified bytes; count those taken
    while a slot was busy copying."""
    scrapes: list[bytes] = []
    busy = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            status, body = http_get(f"http://127.0.0.1:{port}/metrics", timeout=2)
        except OSError:
            time.sleep(0.1)
            continue
        assert status == 200
        scrapes.append(body)
        text = body.decode()
        if any(f'state="{b}"}} 1.0' in text for b in BUSY):
            busy += 1
        verified = re.search(r'^appliance_ingest_bytes_total\{result="verified"\} (\S+)$', text, re.M)
        if verified and float(verified.group(1)) > 0 and busy:
            return scrapes, busy
        time.sleep(0.02)
    raise AssertionError(f"the demo ingested nothing in 120 s: {log.read_text(errors='replace')[-3000:]}")


def test_promtool_check_metrics_on_scrapes_during_a_demo_ingest(stack):
    promtool = tool("promtool")
    assert stack.busy_scrapes > 0, "no scrape caught a slot at work"
    busy = [b for b in stack.demo_scrapes if any(f'state="{s}"}} 1.0' in b.decode() for s in BUSY)]
    for body in [busy[0], busy[-1], stack.demo_scrapes[-1]]:
        out = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=30)
        assert out.returncode == 0, out.stdout.decode() + out.stderr.decode()


def test_prometheus_sees_ingested_bytes_rise(stack):
    p = stack.prometheus
    wait_until(lambda: p.value('count(up{job="appliance"} == 1)') == 2, 30, "both appliances up")
    expr = 'appliance_ingest_bytes_total{station="e2e-demo", result="verified"}'
    first = wait_until(lambda: p.value(expr), 60, "verified bytes of the demo in Prometheus")
    # the demo docks a new generation of cameras every few seconds
    wait_until(lambda: p.value(expr) > first, 60, "the demo's verified bytes to rise")
    assert p.value(f'increase({expr}[5m])') > 0
    # the target's station label (headquarters' name) beside the box's own id from its config
    assert p.value('appliance_build_info{station="e2e-demo", station_id="demo"}') == 1


def test_forced_failures_fire_their_alerts(stack):
    p, full = stack.prometheus, stack.full
    wait_until(lambda: p.value('up{station="e2e-full"}') == 1, 30, "the full station scraped")
    # a vault reserve larger than the disk: no docking needed for this one
    wait_until(lambda: (p.alert("ApplianceVaultFull", "e2e-full") or {}).get("state") == "firing", 30,
               "ApplianceVaultFull firing")
    assert p.alert("ApplianceVaultFull", "e2e-demo") is None
    # let Prometheus see the counters at 0 before the failures
    wait_until(lambda: p.value('appliance_ingest_sessions_total{station="e2e-full", result="failed"}') == 0,
               30, "the failed-sessions counter at 0")
    cams = full.root / "cams"
    full.dock(1, make_camera(cams / "known", "CAM-FULL"))
    full.dock(2, make_camera(cams / "unknown", "CAM-STRANGER"))
    for name in ("ApplianceIngestFailed", "ApplianceUnknownCamera"):
        alert = wait_until(lambda: (a := p.alert(name, "e2e-full")) and a["state"] == "firing" and a, 30,
                           f"{name} firing")
        assert alert["annotations"]["summary_zh"] and alert["annotations"]["runbook_url"].startswith(
            "monitoring/RUNBOOK.md#")
    assert p.value('appliance_ingest_sessions_total{station="e2e-full", result="failed"}') == 2
    assert p.value('appliance_vault_full{station="e2e-full"}') == 1
    assert p.alert("ApplianceIngestFailed", "e2e-demo") is None


def test_scrapes_are_fast_as_prometheus_measures_them(stack):
    p = stack.prometheus
    wait_until(lambda: p.value('count(count_over_time(scrape_duration_seconds{job="appliance"}[1m]) > 5)') == 2,
               30, "a few scrapes of each appliance")
    for station in ("e2e-demo", "e2e-full"):
        worst = p.value(f'max_over_time(scrape_duration_seconds{{station="{station}"}}[5m])')
        median = p.value(f'quantile_over_time(0.5, scrape_duration_seconds{{station="{station}"}}[5m])')
        print(f"{station}: scrape duration median {median * 1000:.1f} ms, max {worst * 1000:.1f} ms")
        assert median < 0.05, (station, median)
        assert worst < 0.25, (station, worst)  # one slow outlier on a loaded 2-core runner at most


def test_dashboard_queries_are_valid_promql(stack):
    from tests.monitoring.test_dashboards import dashboard_queries

    p = stack.prometheus
    for path, expr in dashboard_queries():
        query = (expr.replace("$__rate_interval", "1m").replace("$__range", "1h").replace("$__interval", "15s")
                 .replace("${station:regex}", "e2e-demo").replace("$station", "e2e-demo")
                 .replace("${station}", "e2e-demo"))
        status, body = http_get(p.url("/api/v1/query?" + urllib.parse.urlencode({"query": query})))
        data = json.loads(body)
        assert status == 200 and data["status"] == "success", (path.name, expr, data)
