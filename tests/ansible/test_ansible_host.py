"""The Ansible tree on the controller: ansible-lint (production profile), syntax checks, the
vault, the role READMEs, and the station's config.yaml as the role renders it for every example
station, checked with the real `appliance check-config`.

The roles applied to a real guest are tested in tests/system/test_ansible.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ANSIBLE = REPO / "ansible"
EXAMPLE = ANSIBLE / "inventories" / "example"
ROLES = ["station", "hq", "appliance_release"]
# The example inventory's vault password, documented in ansible/README.md. It protects nothing
# real: a deployment encrypts its own vault with its own password.
EXAMPLE_VAULT_PASSWORD = "evidence-appliance-example"
APPLIANCE = Path(sys.executable).parent / "appliance"


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (scripts/setup --test installs Debian's ansible and ansible-lint)")
    return path


@pytest.fixture
def vault_password_file(tmp_path: Path) -> Path:
    path = tmp_path / "vault-password"
    path.write_text(EXAMPLE_VAULT_PASSWORD + "\n")
    path.chmod(0o600)
    return path


def _env(vault_password_file: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_ROLES_PATH": str(ANSIBLE / "roles"), "NO_COLOR": "1",
           "ANSIBLE_LOCAL_TEMP": "/tmp/ansible-local"}
    if vault_password_file is not None:
        env["ANSIBLE_VAULT_PASSWORD_FILE"] = str(vault_password_file)
    return env


def test_ansible_lint_production_profile_is_clean(vault_password_file: Path) -> None:
    lint = _need("ansible-lint")
    result = subprocess.run([lint, "--profile", "production", "--offline", "--nocolor"], cwd=ANSIBLE,
                            env=_env(vault_password_file), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Passed with production profile" in result.stdout + result.stderr


@pytest.mark.parametrize("playbook", ["site.yml", "upgrade.yml"])
def test_playbooks_pass_the_syntax_check(playbook: str, vault_password_file: Path) -> None:
    ansible_playbook = _need("ansible-playbook")
    result = subprocess.run(
        [ansible_playbook, "--syntax-check", "-i", str(EXAMPLE / "hosts.yml"), playbook],
        cwd=ANSIBLE, env=_env(vault_password_file), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def _vault_files() -> list[Path]:
    return sorted(p for p in ANSIBLE.rglob("*.yml") if "vault" in p.name)


def test_secrets_are_only_in_encrypted_vault_files(vault_password_file: Path) -> None:
    _need("ansible-vault")
    files = _vault_files()
    assert files, "the example inventory keeps its secrets in vault.yml files"
    secrets: list[str] = []
    for path in files:
        assert path.read_text().startswith("$ANSIBLE_VAULT;1.1;AES256"), f"{path} is not encrypted"
        clear = subprocess.run(["ansible-vault", "view", str(path)], env=_env(vault_password_file),
                               capture_output=True, text=True, check=True).stdout
        data = yaml.safe_load(clear)
        for value in data["vault_station_metrics_tokens"].values():
            assert len(value) >= 32
            secrets.append(value)
    # No secret value appears in clear anywhere else in the tree.
    for path in ANSIBLE.rglob("*"):
        if path.is_file() and path not in files:
            text = path.read_text(errors="replace")
            for secret in secrets:
                assert secret not in text, f"a vault secret is in clear in {path}"
    # The station role writes secrets with no_log: they never appear in Ansible's output.
    metrics = (ANSIBLE / "roles" / "station" / "tasks" / "metrics.yml").read_text()
    assert metrics.count("no_log: true") == 2


@pytest.mark.parametrize("role", ROLES)
def test_role_readme_documents_every_variable(role: str) -> None:
    defaults = yaml.safe_load((ANSIBLE / "roles" / role / "defaults" / "main.yml").read_text()) or {}
    readme = (ANSIBLE / "roles" / role / "README.md").read_text()
    documented = set(re.findall(r"^\|\s*`([a-z_0-9]+)`", readme, re.MULTILINE))
    missing = sorted(set(defaults) - documented)
    assert not missing, f"roles/{role}/README.md does not document {missing}"
    # And no README row for a variable that does not exist (renamed, removed).
    used = set()
    for path in (ANSIBLE / "roles" / role).rglob("*"):
        if path.is_file() and path.name != "README.md":
            used |= set(re.findall(r"\b(" + re.escape(role) + r"_[a-z_0-9]+)", path.read_text()))
    stale = sorted(v for v in documented - set(defaults) if v not in used)
    assert not stale, f"roles/{role}/README.md documents unknown variables {stale}"
    for section in ("## Variables", "## Example"):
        assert section in readme


def test_station_config_rendered_for_every_example_station_passes_check_config(
        tmp_path: Path, vault_password_file: Path) -> None:
    ansible_playbook = _need("ansible-playbook")
    if not APPLIANCE.exists():
        pytest.skip(f"{APPLIANCE} is missing (scripts/setup installs the appliance into .venv)")
    out = tmp_path / "configs"
    out.mkdir()
    result = subprocess.run(
        [ansible_playbook, "-i", str(EXAMPLE / "hosts.yml"), str(REPO / "tests" / "ansible" / "render-config.yml"),
         "-e", f"render_dir={out}"],
        cwd=ANSIBLE, env=_env(vault_password_file), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    rendered = sorted(out.glob("*.yaml"))
    assert [p.stem for p in rendered] == ["st01", "st02", "st03"]
    for path in rendered:
        check = subprocess.run([str(APPLIANCE), "check-config", "--config", str(path)],
                               capture_output=True, text=True)
        assert check.returncode == 0, f"{path.name}:\n{path.read_text()}\n{check.stdout}{check.stderr}"
        assert "vault: zfs at /tank/evidence" in check.stdout
    st01 = yaml.safe_load((out / "st01.yaml").read_text())
    assert st01["station"] == {"id": "st01", "name": "城关派出所执法站", "timezone": "Asia/Shanghai",
                               "end_of_day": "18:00"}
    assert st01["vault"]["dataset"] == "tank/evidence"
    assert st01["dock"]["slots"][1] == "pci-0000:00:14.0-usb-0:1:1.0-scsi-0:0:0:0"
    assert st01["ingest"]["hashes"] == ["sha256", "sm3"]
    assert st01["metrics"] == {"listen": "0.0.0.0:9108", "bearer_token_file": "/etc/appliance/metrics-token",
                               "tls": None}
    rep = st01["replication"]
    assert rep["enabled"] is True and rep["target"]["user"] == "zrecv-st01"
    assert rep["target"]["path"] == "hq/stations/st01" and rep["rate_limit"] == "2MiB"
    st03 = yaml.safe_load((out / "st03.yaml").read_text())
    assert st03["dock"]["slots"][4] == "pci-0000:00:14.0-usb-0:3.4:1.0-scsi-0:0:0:0"
    assert st03["replication"]["interval"] == "30min" and "keep_source" not in st03["replication"]
    # The token itself is never in the config, only the root-only file that holds it.
    tokens = subprocess.run(["ansible-vault", "view", str(EXAMPLE / "group_vars" / "stations" / "vault.yml")],
                            env=_env(vault_password_file), capture_output=True, text=True, check=True).stdout
    for token in yaml.safe_load(tokens)["vault_station_metrics_tokens"].values():
        assert all(token not in p.read_text() for p in rendered)


def test_a_bad_station_value_is_refused_before_it_reaches_a_box(tmp_path: Path, vault_password_file: Path) -> None:
    """The role's config task validates with `appliance check-config`: a value the schema refuses
    (here an unknown wipe policy) fails the check, so the template never replaces config.yaml."""
    ansible_playbook = _need("ansible-playbook")
    if not APPLIANCE.exists():
        pytest.skip(f"{APPLIANCE} is missing")
    out = tmp_path / "configs"
    out.mkdir()
    subprocess.run(
        [ansible_playbook, "-i", str(EXAMPLE / "hosts.yml"), str(REPO / "tests" / "ansible" / "render-config.yml"),
         "-e", f"render_dir={out}", "-e", "station_ingest_wipe=always", "--limit", "st02"],
        cwd=ANSIBLE, env=_env(vault_password_file), capture_output=True, text=True, timeout=300, check=True)
    check = subprocess.run([str(APPLIANCE), "check-config", "--config", str(out / "st02.yaml")],
                           capture_output=True, text=True)
    assert check.returncode != 0 and "ingest.wipe" in check.stdout + check.stderr


def test_build_release_refuses_a_version_the_playbooks_could_not_compare(tmp_path: Path) -> None:
    """scripts/build-release checks --version before it builds anything (the real build runs in
    tests/system/test_ansible.py, which installs three releases it made)."""
    result = subprocess.run([str(REPO / "scripts" / "build-release"), "--version", "1.0 beta", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "expected a PEP 440 version" in result.stderr
    assert result.stdout == "" and not list(tmp_path.iterdir())
