"""monitoring/alerts.yml: promtool checks, unit tests for every alert, texts, runbook, metric names."""

import re
import subprocess

import yaml

from appliance.events import EventBus
from appliance.metrics import Metrics
from tests.monitoring.support import MONITORING, exposed_names, metric_names_in, tool
from tests.monitoring.test_metrics import filled_metrics

RULES = MONITORING / "alerts.yml"
TESTS = [MONITORING / "alerts.test.yml", MONITORING / "alerts.days.test.yml"]


def alerts() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r]


def test_promtool_check_rules():
    out = subprocess.run([tool("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in out.stdout


def test_promtool_test_rules():
    out = subprocess.run([tool("promtool"), "test", "rules", *map(str, TESTS)], capture_output=True,
                         text=True, timeout=300, cwd=MONITORING)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("SUCCESS") == len(TESTS)


def test_every_alert_is_tested_firing_and_not_firing():
    firing, quiet = set(), set()
    for path in TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case["alert_rule_test"]:
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {a["alert"] for a in alerts()}
    assert names - firing == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested quiet"


def test_the_required_alerts_exist():
    names = {a["alert"] for a in alerts()}
    assert {"ApplianceDown", "ApplianceSlotStuck", "ApplianceIngestFailed", "ApplianceVerifyProblems",
            "ApplianceHashMismatch", "ApplianceVaultNearlyFull", "ApplianceVaultFull", "AppliancePoolDegraded",
            "ApplianceReplicationStale", "ApplianceBurnVerifyFailed", "ApplianceDevicesOverdue",
            "ApplianceAuditChainBroken"} <= names


def test_texts_in_both_languages_and_a_runbook_section_for_each():
    runbook = (MONITORING / "RUNBOOK.md").read_text()
    anchors = {h.strip().lower() for h in re.findall(r"^## (\w+)\s*$", runbook, re.M)}
    for a in alerts():
        ann = a["annotations"]
        assert set(ann) == {"summary", "summary_zh", "description", "description_zh", "runbook_url"}, a["alert"]
        assert re.search(r"[\u4e00-\u9fff]", ann["summary_zh"] + ann["description_zh"]), a["alert"]
        assert ann["runbook_url"] == f"monitoring/RUNBOOK.md#{a['alert'].lower()}"
        assert a["alert"].lower() in anchors, f"RUNBOOK.md has no section '## {a['alert']}'"
        assert a["labels"]["severity"] in ("critical", "warning", "info")


def test_alerts_use_only_metrics_the_appliance_exposes():
    m, _ = filled_metrics()
    m.replication_configured(True)
    m.burn_verify_failed()
    exposed = exposed_names(m.render().decode())
    for a in alerts():
        missing = metric_names_in(a["expr"]) - exposed
        assert not missing, (a["alert"], missing)


def test_a_fresh_metric_set_looks_like_no_problem():
    """Values before any event must not look like problems that alerts without 'for'
    report at once (replication off, nothing failed yet)."""
    m = Metrics(EventBus(), ["1"])
    text = m.render().decode()
    assert "appliance_replication_enabled 0.0" in text
    assert "appliance_vault_full 0.0" in text
    assert "appliance_verify_problems 0.0" in text


async def test_a_started_appliance_has_its_figures_before_the_first_scrape(harness):
    """The quick collectors ran inside start(): free space, chain state and devices are real."""
    m = harness.appliance.metrics
    text = m.render().decode()
    free = [line for line in text.splitlines() if line.startswith("appliance_vault_free_bytes ")]
    assert float(free[0].split()[1]) > 0
    assert "appliance_audit_chain_ok 1.0" in text
    assert 'appliance_collector_success{collector="devices"} 1.0' in text
