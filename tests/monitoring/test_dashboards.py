"""The Grafana dashboards: JSON structure, layout, and queries over metrics that exist.

(The end-to-end test also sends every query to a real Prometheus, which parses it.)
"""

import json
import re
from pathlib import Path

import pytest

from tests.monitoring.support import MONITORING, exposed_names, metric_names_in
from tests.monitoring.test_metrics import filled_metrics

DASHBOARDS = sorted((MONITORING / "dashboards").glob("*.json"))
PANEL_TYPES = {"row", "stat", "timeseries", "table", "bargauge", "gauge"}


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def panels(board: dict) -> list[dict]:
    out = []
    for p in board["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def dashboard_queries() -> list[tuple[Path, str]]:
    return [(path, target["expr"]) for path in DASHBOARDS for p in panels(load(path))
            for target in p.get("targets", [])]


def test_there_is_a_station_and_a_fleet_dashboard():
    assert {p.stem for p in DASHBOARDS} == {"station", "fleet"}
    uids = {load(p)["uid"] for p in DASHBOARDS}
    assert uids == {"appliance-station", "appliance-fleet"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_structure(path):
    board = load(path)
    for key in ("uid", "title", "panels", "templating", "schemaVersion", "time", "refresh"):
        assert key in board, key
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["station"]["type"] == "query"
    assert "label_values(appliance_build_info, station)" in variables["station"]["definition"]
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    occupied: set[tuple[int, int]] = set()
    for p in panels(board):
        assert p["type"] in PANEL_TYPES, p["type"]
        assert p.get("title"), p
        g = p["gridPos"]
        assert 0 <= g["x"] and g["w"] > 0 and g["x"] + g["w"] <= 24 and g["h"] > 0 and g["y"] >= 0, p["title"]
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & occupied, f"panel {p['title']!r} overlaps another"
        occupied |= cells
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert p["targets"] and len(refs) == len(set(refs)), p["title"]
        for target in p["targets"]:
            assert target["expr"].strip(), p["title"]
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_query_is_scoped_by_station(path):
    want = 'station="$station"' if path.stem == "station" else 'station=~"$station"'
    for p in panels(load(path)):
        for target in p.get("targets", []):
            selectors = re.findall(r"\b(\w+)\{([^}]*)\}", target["expr"])
            assert selectors, target["expr"]
            for name, matchers in selectors:
                assert want in matchers, (p["title"], name, target["expr"])


def test_dashboards_use_only_metrics_the_appliance_exposes():
    m, _ = filled_metrics()
    m.replication_configured(True)
    m.burn_verify_failed()
    m.burn_job_finished("done")
    m.disc_burned()
    exposed = exposed_names(m.render().decode())
    for path, expr in dashboard_queries():
        missing = metric_names_in(expr) - exposed
        assert not missing, (path.name, expr, missing)
        assert "process_resident_memory_bytes" in exposed
