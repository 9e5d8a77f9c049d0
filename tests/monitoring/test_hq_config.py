"""The headquarters example (monitoring/hq/): `promtool check config`, and the station labels."""

import subprocess

import yaml

from tests.monitoring.support import MONITORING, tool

HQ = MONITORING / "hq"


def test_promtool_check_config_of_the_hq_example(tmp_path):
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for name in ("appliance.token", "appliance-ca.crt", "hq-client.crt", "hq-client.key"):
        (secrets / name).write_text("placeholder\n")
    text = (HQ / "prometheus.yml").read_text()
    text = (text.replace("/etc/prometheus/secrets/", f"{secrets}/")
                .replace("/etc/prometheus/rules/appliance-alerts.yml", str(MONITORING / "alerts.yml"))
                .replace("/etc/prometheus/file_sd/appliances.yml", str(HQ / "appliances.yml")))
    config = tmp_path / "prometheus.yml"
    config.write_text(text)
    out = subprocess.run([tool("promtool"), "check", "config", str(config)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    jobs = [j["job_name"] for j in yaml.safe_load(text)["scrape_configs"]]
    assert jobs == ["appliance"]


def test_every_example_target_has_a_station_label():
    for group in yaml.safe_load((HQ / "appliances.yml").read_text()):
        assert group["labels"]["station"], group
