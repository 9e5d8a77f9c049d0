"""The Ansible roles applied for real: ansible-playbook over SSH to a fresh base image in QEMU.

One guest booted from the *base* image (Debian 12 + OpenZFS, no appliance) plays both parts,
as `st01` and `hq01` of a test inventory: the station on pool `tank` (disk virtio-pool0,
created by the station role), headquarters on pool `hq` (virtio-pool1, created by the hq role).
The station reaches HQ over SSH at 127.0.0.1:22 as its restricted receiving user, exactly as it
would reach a real HQ. One boot for the module. The two roles share /opt/appliance here (one
offline install of a release instead of two: each costs minutes under TCG); on separate
machines each has its own.

Three releases are built on the host with scripts/build-release while the guest boots: the
repository as it is (V1), and the same sources as two higher versions (V2, V3). The failed
upgrade is V3 rolled out with a configuration the box cannot start with (a metrics listener
on an address the box does not have: `check-config` accepts it, the daemon exits at start),
so the new release never answers its health check and the playbook must roll back.

The tests run in file order and build on each other. Every playbook's output is kept in
test-output/system/test_ansible/.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.system.camera import make_camera_image
from tests.system.conftest import OUTPUT, REPO, BuiltImage, record_timing
from tests.system.vm import VM, XHCI_PCI_ADDR

pytestmark = pytest.mark.system

ANSIBLE = REPO / "ansible"
LOGS = OUTPUT / "test_ansible"
EXAMPLE_VAULT = ANSIBLE / "inventories" / "example" / "group_vars" / "stations" / "vault.yml"
EXAMPLE_VAULT_PASSWORD = "evidence-appliance-example"  # documented in ansible/README.md
CURRENT = "/opt/appliance/current/venv/bin"
CATALOG = "/tank/evidence/catalog/catalog.sqlite"
VENDOR = "ZHIFAYI"
MODEL = "DSJ-V9 BodyCam"
SLOT_PORT = 2
UNREACHABLE_LISTEN = "192.0.2.1:9108"  # TEST-NET-1: never an address of the box


def id_path(port: int) -> str:
    return f"pci-0000:00:{XHCI_PCI_ADDR:02x}.0-usb-0:{port}:1.0-scsi-0:0:0:0"


@pytest.fixture(autouse=True)
def _timed(request: pytest.FixtureRequest):
    started = time.monotonic()
    yield
    record_timing(f"test_ansible: {request.node.name}", time.monotonic() - started)


class Rig:
    """The booted guest, the releases and the test inventory."""

    def __init__(self, vm: VM, releases: dict[str, str], workdir: Path, ssh_key: Path) -> None:
        self.vm = vm
        self.releases = releases  # "v1"/"v2"/"v3" -> version
        self.workdir = workdir
        self.ssh_key = ssh_key
        self.inventory = workdir / "inventory"
        self.password_file = workdir / "vault-password"
        self.release_dir = workdir / "releases"

    def write_inventory(self) -> None:
        inv = self.inventory
        (inv / "group_vars" / "stations").mkdir(parents=True, exist_ok=True)
        (inv / "group_vars" / "hq").mkdir(parents=True, exist_ok=True)
        (inv / "host_vars").mkdir(parents=True, exist_ok=True)
        host = {"ansible_host": "127.0.0.1", "ansible_port": self.vm.ssh_port}
        (inv / "hosts.yml").write_text(yaml.safe_dump({"all": {
            "vars": {
                "ansible_user": "root",
                "ansible_ssh_private_key_file": str(self.ssh_key),
                # The guest makes new host keys on every boot: nothing to pin in a test.
                "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
                "station_release_version": self.releases["v1"],
                "station_release_archive_dir": str(self.release_dir),
            },
            "children": {"stations": {"hosts": {"st01": dict(host)}},
                         "hq": {"hosts": {"hq01": dict(host)}}}}}))
        (inv / "host_vars" / "st01.yml").write_text(yaml.safe_dump(
            {"station_id": "st01", "station_name": "城关派出所执法站"}, allow_unicode=True))
        (inv / "group_vars" / "stations" / "main.yml").write_text(yaml.safe_dump({
            "station_zfs_pool_create": True,
            "station_zfs_pool_vdevs": ["/dev/disk/by-id/virtio-pool0"],
            "station_dock_slots": {1: id_path(1), 2: id_path(2), 3: id_path(3)},
            "station_metrics_listen": "127.0.0.1:9108",
            "station_metrics_bearer_token": "{{ vault_station_metrics_tokens['st01'] }}",
            "station_replication_enabled": True,
            "station_replication_hq_host": "127.0.0.1",
            "station_replication_hq_inventory_host": "hq01",
            # Runs only when the test asks (replicate --now), not on the daemon's schedule.
            "station_replication_options": {"interval": "6h", "after_ingest_delay": "6h",
                                            "retry_interval": "6h", "timeout": "10min"},
        }))
        # The example inventory's encrypted vault, as committed: the test knows its password.
        shutil.copy(EXAMPLE_VAULT, inv / "group_vars" / "stations" / "vault.yml")
        (inv / "group_vars" / "hq" / "main.yml").write_text(yaml.safe_dump({
            "hq_zfs_pool": "hq",
            "hq_zfs_pool_create": True,
            "hq_zfs_pool_vdevs": ["/dev/disk/by-id/virtio-pool1"],
            "hq_appliance_root": "/opt/appliance",
            "hq_release_version": self.releases["v1"],
            "hq_release_archive_dir": str(self.release_dir),
        }))
        self.password_file.write_text(EXAMPLE_VAULT_PASSWORD + "\n")
        self.password_file.chmod(0o600)

    def playbook(self, playbook: str, name: str, *extra: str, timeout: float = 1800) -> tuple[int, str, dict]:
        """Run a playbook against the guest; its exit code, output and the recap per host."""
        started = time.monotonic()
        env = {**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
               "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_LOCAL_TEMP": str(self.workdir / "ansible-tmp"),
               # A short control path of its own: the inventory's two hosts are one guest.
               "ANSIBLE_SSH_CONTROL_PATH_DIR": str(self.workdir / "cp"),
               # Each task's time in the kept log: under TCG every task costs seconds.
               "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks"}
        cmd = ["ansible-playbook", "-i", str(self.inventory / "hosts.yml"),
               "--vault-password-file", str(self.password_file), playbook, *extra]
        result = subprocess.run(cmd, cwd=ANSIBLE, env=env, capture_output=True, text=True, timeout=timeout)
        seconds = time.monotonic() - started
        output = result.stdout + result.stderr
        LOGS.mkdir(parents=True, exist_ok=True)
        (LOGS / f"{name}.log").write_text(f"$ {shlex.join(cmd)}\n# {seconds:.0f} s, exit {result.returncode}\n{output}")
        record_timing(f"test_ansible: ansible-playbook {name}", seconds)
        recap = {}
        for line in output.splitlines():
            m = re.match(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", line)
            if m:
                recap[m.group(1)] = {"ok": int(m.group(2)), "changed": int(m.group(3)),
                                     "unreachable": int(m.group(4)), "failed": int(m.group(5))}
        return result.returncode, output, recap

    def health(self) -> dict:
        return json.loads(self.vm.ssh(
            f"{CURRENT}/python -c \"import urllib.request; print(urllib.request.urlopen("
            f"'http://127.0.0.1:8080/api/v1/health', timeout=30).read().decode())\"").stdout)

    def wait_healthy(self, version: str, timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            r = self.vm.ssh(f"{CURRENT}/python -c \"import urllib.request; print(urllib.request.urlopen("
                            f"'http://127.0.0.1:8080/api/v1/health', timeout=10).read().decode())\"",
                            check=False)
            if r.returncode == 0 and json.loads(r.stdout).get("version") == version:
                return json.loads(r.stdout)
            if time.monotonic() > deadline:
                raise AssertionError(f"no health with version {version} after {timeout} s: {r.stdout}{r.stderr}")
            time.sleep(3)


def build_releases(out: Path, results: dict[str, object]) -> None:
    """V1 (the repository as it is), then the same sources as two higher versions."""
    try:
        started = time.monotonic()
        versions: dict[str, str] = {}
        base = None
        for key, override in (("v1", None), ("v2", ".post1"), ("v3", ".post2")):
            cmd = [str(REPO / "scripts" / "build-release"), "--out", str(out)]
            if override:
                cmd += ["--version", f"{base}{override}"]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            if done.returncode != 0:
                raise RuntimeError(f"{shlex.join(cmd)} failed:\n{done.stderr[-3000:]}")
            values = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
            versions[key] = values["version"]
            base = base or values["version"]
        record_timing("test_ansible: three releases (scripts/build-release)", time.monotonic() - started)
        results["versions"] = versions
    except Exception as exc:  # noqa: BLE001 - handed to the fixture, which fails with it
        results["error"] = exc


@pytest.fixture(scope="module")
def rig(appliance_image: BuiltImage) -> Rig:
    if shutil.which("ansible-playbook") is None:
        pytest.skip("ansible-playbook is not installed (scripts/setup --test installs Debian's ansible)")
    workdir = OUTPUT / "test_ansible-vm"
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    release_dir = workdir / "releases"
    built: dict[str, object] = {}
    builder = threading.Thread(target=build_releases, args=(release_dir, built))
    builder.start()  # on the host's cores while the guest boots
    vm = VM(appliance_image.base_image, appliance_image.ssh_key, workdir, pool_disks=2)
    try:
        vm.start()
        record_timing("test_ansible: boot base image to SSH", vm.boot_seconds or 0)
        builder.join()
        if "error" in built:
            raise built["error"]  # type: ignore[misc]
        rig = Rig(vm, built["versions"], workdir, appliance_image.ssh_key)  # type: ignore[arg-type]
        rig.write_inventory()
        yield rig
    finally:
        builder.join()
        started = time.monotonic()
        vm.shutdown()
        record_timing("test_ansible: shutdown", time.monotonic() - started)
        vm.remove_disks()


# -- the tests -----------------------------------------------------------------------------------


def test_site_playbook_installs_station_and_hq_on_a_fresh_base_image(rig: Rig) -> None:
    vm = rig.vm
    assert vm.ssh("test -e /opt/appliance", check=False).returncode != 0  # a bare base image
    rc, out, recap = rig.playbook("site.yml", "site-first-run")
    assert rc == 0, out[-6000:]
    assert recap["st01"]["failed"] == 0 and recap["hq01"]["failed"] == 0
    v1 = rig.releases["v1"]
    assert vm.ssh("readlink /opt/appliance/current").stdout.strip() == f"releases/{v1}"
    assert vm.ssh("systemctl is-active appliance.service").stdout.strip() == "active"
    assert vm.ssh("systemctl is-enabled appliance-verify.timer").stdout.strip() == "enabled"
    health = rig.health()
    assert health["status"] == "ok" and health["version"] == v1 and health["station"] == "st01"
    assert health["vault"]["backend"] == "zfs" and health["busy"] == [] and health["burning"] == []
    assert vm.ssh("zpool list -H -o health tank").stdout.strip() == "ONLINE"
    assert "tank/evidence/media" in vm.ssh("zfs list -H -o name -r tank").stdout
    # Hardened, yet really running (the ingest test below shows it can mount and snapshot).
    props = dict(line.split("=", 1) for line in vm.ssh(
        "systemctl show appliance.service -p NoNewPrivileges -p RestrictNamespaces -p CapabilityBoundingSet "
        "-p SystemCallArchitectures -p LockPersonality").stdout.splitlines())
    assert props["NoNewPrivileges"] == "yes" and props["LockPersonality"] == "yes"
    assert "cap_sys_module" not in props["CapabilityBoundingSet"] and "cap_sys_admin" in props["CapabilityBoundingSet"]
    # The metrics listener wants the bearer token from the vault; the config holds only its file.
    config = vm.ssh("cat /etc/appliance/config.yaml").stdout
    token = vm.ssh("cat /etc/appliance/metrics-token").stdout.strip()
    assert token and token not in config
    assert vm.ssh("stat -c %a /etc/appliance/metrics-token").stdout.strip() == "600"
    probe = (f"{CURRENT}/python - <<'EOF'\nimport urllib.request, urllib.error\n"
             "def get(h):\n"
             "    try: return urllib.request.urlopen(urllib.request.Request('http://127.0.0.1:9108/metrics', headers=h), timeout=20).status\n"
             "    except urllib.error.HTTPError as e: return e.code\n"
             f"print(get({{}}), get({{'Authorization': 'Bearer {token}'}}))\nEOF")
    assert vm.ssh(probe).stdout.split() == ["401", "200"]
    assert vm.ssh("systemctl is-active systemd-timesyncd.service").stdout.strip() == "active"
    # HQ: the station's dataset, its restricted key, the pinned host key on the station.
    assert vm.ssh("zfs get -H -o value readonly,canmount hq/stations/st01").stdout.split() == ["on", "off"]
    keys = vm.ssh("cat /etc/ssh/authorized_keys/zrecv-st01").stdout
    assert keys.startswith('restrict,command="/usr/bin/python3 -I -S /opt/appliance/current/')
    assert "--root hq/stations/st01 --backup-name st01" in keys
    hq_key = vm.ssh("cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub").stdout.strip()
    assert vm.ssh("grep -v '^#' /etc/appliance/replication/known_hosts").stdout.strip() == f"127.0.0.1 {hq_key}"
    assert token not in out


def test_a_hot_plugged_camera_is_ingested(rig: Rig, tmp_path: Path) -> None:
    vm = rig.vm
    camera = make_camera_image(tmp_path / "cam.img", "DSJ00042A", clips=2)
    vm.ssh(f"{CURRENT}/appliance device add {camera.serial} --officer 张三 --model DSJ-TEST")
    started = time.monotonic()
    vm.hotplug_camera(camera.path, port=SLOT_PORT, serial=camera.serial, vendor=VENDOR, model=MODEL)
    # udev gave the docked camera its slot name (the role's rules).
    vm.ssh("udevadm settle; for i in $(seq 60); do test -e /dev/appliance/slot2-part1 && exit 0; sleep 1; done; exit 1")
    query = shlex.quote(f"SELECT id, slot FROM sessions WHERE device_serial = '{camera.serial}' AND state = 'done'")
    deadline = time.monotonic() + 300
    while not (row := vm.ssh(f"sqlite3 -separator ' ' {CATALOG} {query}", check=False).stdout.strip()):
        assert time.monotonic() < deadline, vm.ssh("journalctl -u appliance -n 60 --no-pager", check=False).stdout
        time.sleep(3)
    record_timing("test_ansible: hot-plug to session done", time.monotonic() - started)
    session, slot = row.split()
    assert slot == str(SLOT_PORT)
    sums = vm.ssh(f"cd /tank/evidence/media && find . -path '*/{session}/files/*' -type f -exec sha256sum {{}} +").stdout
    stored = {line.split()[1].split("/files/", 1)[1]: line.split()[0] for line in sums.splitlines()}
    assert stored == {k: v for k, v in camera.files.items() if k.endswith(".MP4")}
    assert f"tank/evidence/media@ingest-{session}" in vm.ssh("zfs list -H -t snapshot -o name").stdout
    vm.unplug_camera(SLOT_PORT)
    vm.wait_for_no_block_device(ID_SERIAL_SHORT=camera.serial)


def test_a_second_run_changes_nothing(rig: Rig) -> None:
    pid = rig.vm.ssh("systemctl show -p MainPID --value appliance.service").stdout.strip()
    rc, out, recap = rig.playbook("site.yml", "site-second-run")
    assert rc == 0, out[-6000:]
    assert recap["st01"]["changed"] == 0 and recap["hq01"]["changed"] == 0, \
        "\n".join(line for line in out.splitlines() if line.startswith("changed:")) + f"\n{recap}"
    # Not restarted either.
    assert rig.vm.ssh("systemctl show -p MainPID --value appliance.service").stdout.strip() == pid


def test_a_config_change_restarts_the_running_appliance_after_the_idle_wait(rig: Rig) -> None:
    """The handler chain while the daemon runs: the idle wait (tasks/wait_idle.yml) really
    asks /api/v1/health, then the restart, then the health check with the version."""
    vm = rig.vm
    pid = vm.ssh("systemctl show -p MainPID --value appliance.service").stdout.strip()
    rc, out, recap = rig.playbook("site.yml", "site-config-change", "--limit", "st01", "--tags", "config",
                                  "-e", "station_name=城关派出所执法站（改名）")
    assert rc == 0, out[-6000:]
    assert recap["st01"]["changed"] >= 1 and recap["st01"]["failed"] == 0, recap
    # The include, then the included task: asked the daemon, not skipped.
    statuses = re.findall(r"(?:TASK|RUNNING HANDLER) \[station : Wait until no slot is copying and no disc"
                          r" is burning\][^\n]*\n(?:[^\n]*\n)*?(\w+):", out)
    assert "ok" in statuses and "skipping" not in statuses, (statuses, out[-6000:])
    assert vm.ssh("systemctl show -p MainPID --value appliance.service").stdout.strip() != pid
    assert "城关派出所执法站（改名）" in vm.ssh("cat /etc/appliance/config.yaml").stdout
    assert rig.health()["version"] == rig.releases["v1"]


def test_replication_to_the_hq_that_the_hq_role_set_up(rig: Rig) -> None:
    vm = rig.vm
    started = time.monotonic()
    r = vm.ssh(f"{CURRENT}/appliance replicate --now --json", check=False, timeout=900)
    record_timing("test_ansible: appliance replicate --now", time.monotonic() - started)
    status = json.loads(r.stdout)
    assert r.returncode == 0 and status["state"] == "ok", vm.ssh(
        "cat /var/lib/appliance/state/replication/last-run.log", check=False).stdout[-4000:]
    assert status["pending_ingest"] == 0
    out = vm.ssh("/opt/appliance/current/venv/bin/appliance hq status --root hq/stations --station st01 --json",
                 timeout=300).stdout
    (LOGS / "hq-status.json").write_text(out)
    (station,) = json.loads(out)
    assert station["station"] == "st01"
    sessions = vm.ssh(f"sqlite3 {CATALOG} \"SELECT id FROM sessions WHERE state = 'done'\"").stdout.split()
    got = {s["session"]: s for s in station["sessions"]}
    assert sorted(got) == sorted(sessions) and sessions
    for sid in sessions:
        assert (got[sid]["state"], got[sid]["manifest"]) == ("arrived", "ok"), got[sid]
        assert got[sid]["officer"] == "张三"


def test_upgrade_to_a_newer_build(rig: Rig) -> None:
    vm = rig.vm
    v1, v2 = rig.releases["v1"], rig.releases["v2"]
    rc, out, recap = rig.playbook("upgrade.yml", "upgrade-v2", "-e", f"station_release_version={v2}")
    assert rc == 0, out[-6000:]
    assert recap["st01"]["failed"] == 0
    assert vm.ssh("readlink /opt/appliance/current").stdout.strip() == f"releases/{v2}"
    assert rig.health()["version"] == v2
    # The previous release stays for a rollback.
    assert vm.ssh(f"test -x /opt/appliance/releases/{v1}/venv/bin/appliance", check=False).returncode == 0


def test_a_failed_upgrade_rolls_back(rig: Rig) -> None:
    vm = rig.vm
    v2, v3 = rig.releases["v2"], rig.releases["v3"]
    rc, out, recap = rig.playbook(
        "upgrade.yml", "upgrade-v3-fails", "-e", f"station_release_version={v3}",
        "-e", f"station_metrics_listen={UNREACHABLE_LISTEN}", "-e", "station_health_timeout=30")
    assert rc != 0 and recap["st01"]["failed"] == 1, out[-6000:]
    assert f"did not pass its health check; rolled back to {v2}" in out
    assert "cannot assign requested address" in out  # the journal's reason, in the report
    assert vm.ssh("readlink /opt/appliance/current").stdout.strip() == f"releases/{v2}"
    assert UNREACHABLE_LISTEN not in vm.ssh("cat /etc/appliance/config.yaml").stdout
    health = rig.wait_healthy(v2, timeout=60)
    assert health["status"] == "ok"
    assert vm.ssh("systemctl is-active appliance.service").stdout.strip() == "active"
