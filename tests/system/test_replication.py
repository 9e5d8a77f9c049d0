"""Replication to headquarters in the QEMU rig: a station and a headquarters in one guest.

The station is the appliance as the image ships it (``appliance.service``, the vault on pool
``tank``, disk virtio-pool0) with ``replication:`` in its config.yaml. Headquarters is a
second pool ``hq`` on the other disk, reached the way a real HQ is: over SSH (its own sshd on
127.0.0.1:2222 with its own host key, pinned in the station's known_hosts), as the receiving
user ``zrecv-station`` whose key is restricted to ``appliance/hq_shell.py`` and whose ZFS
permissions are delegated on ``hq/stations/station`` only (docs/replication.md, "At
headquarters"). Every byte crosses ``ssh`` and ``zfs recv``.

Sessions are made by docking FAT32 camera images (built on the host with mkfs.vfat + mtools,
real ffmpeg clips, plus a random "recording" where a transfer must take a while) through
``appliance dock attach`` on a loop partition; the daemon mounts them with the kernel's vfat.

The tests run in file order and build on each other (one vault, one HQ). Each scenario's
``last-run.log`` is kept in test-output/system/test_replication/ (the unit tests' recorded
output in tests/vault/data/replication/ came from such runs).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shlex
import time
from pathlib import Path

import pytest

from appliance.vault.replication import parse_output
from tests.system.camera import CameraImage, _copy_in, make_camera_image
from tests.system.conftest import OUTPUT, record_timing
from tests.system.vm import VM

pytestmark = pytest.mark.system

APPLIANCE = "/opt/appliance/venv/bin/appliance"
PYTHON = "/opt/appliance/venv/bin/python3"
CONFIG = "/etc/appliance/config.yaml"
CATALOG = "/tank/evidence/catalog/catalog.sqlite"
STATE = "/var/lib/appliance/state/replication"
HQ = "hq/stations/station"
HQ_USER = "zrecv-station"
SLOW_CONFIG = "/etc/appliance/config-slow.yaml"
LOGS = OUTPUT / "test_replication"

REPLICATION = f"""
replication:
  enabled: true
  target:
    host: 127.0.0.1
    port: 2222
    user: {HQ_USER}
    key_file: /etc/appliance/replication/id_ed25519
    known_hosts_file: /etc/appliance/replication/known_hosts
    path: {HQ}
  interval: 1h
  after_ingest_delay: 10s
  retry_interval: 30min
  timeout: 10min
  keep_source: 5,1d1w
  keep_target: 5,1d1w,1w1m
"""

# What HQ's administrator does once per station (docs/replication.md), and the station's key.
SETUP = f"""
set -e
systemctl stop appliance.service
modprobe zfs
zpool create -f -o ashift=12 -O atime=off tank /dev/disk/by-id/virtio-pool0
zpool create -f -o ashift=12 -O atime=off hq /dev/disk/by-id/virtio-pool1
zfs create tank/evidence

# -- headquarters --
zfs create -o canmount=off hq/stations
zfs create -o canmount=off -o readonly=on {HQ}
useradd --system --create-home --home-dir /var/lib/{HQ_USER} --shell /bin/sh {HQ_USER}
usermod -p '*' {HQ_USER}
zfs allow -u {HQ_USER} create,receive,mount,mountpoint,hold,release,destroy,rollback,userprop,readonly,canmount,compression,recordsize,atime,xattr,exec,setuid,devices {HQ}
mkdir -p /etc/ssh-hq/authorized_keys
ssh-keygen -q -t ed25519 -N '' -f /etc/ssh-hq/ssh_host_ed25519_key
cat > /etc/ssh-hq/sshd_config <<EOF
Port 2222
ListenAddress 127.0.0.1
HostKey /etc/ssh-hq/ssh_host_ed25519_key
PidFile /run/sshd-hq.pid
AuthorizedKeysFile /etc/ssh-hq/authorized_keys/%u
AllowUsers zrecv-*
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
ClientAliveInterval 15
ClientAliveCountMax 4
EOF
cat > /etc/systemd/system/hq-sshd.service <<EOF
[Unit]
Description=headquarters' receiving sshd (test rig)
[Service]
ExecStart=/usr/sbin/sshd -D -e -f /etc/ssh-hq/sshd_config
KillMode=process
EOF
systemctl daemon-reload
systemctl start hq-sshd.service

# -- the station --
mkdir -p /etc/appliance/replication
ssh-keygen -q -t ed25519 -N '' -C station-replication -f /etc/appliance/replication/id_ed25519
SHELL_PY=$({PYTHON} -c 'import appliance.hq_shell as h; print(h.__file__)')
echo "restrict,command=\\"/usr/bin/python3 -I -S $SHELL_PY --root {HQ} --backup-name station\\" $(cat /etc/appliance/replication/id_ed25519.pub)" > /etc/ssh-hq/authorized_keys/{HQ_USER}
echo "[127.0.0.1]:2222 $(cut -d' ' -f1,2 /etc/ssh-hq/ssh_host_ed25519_key.pub)" > /etc/appliance/replication/known_hosts
cat >> {CONFIG} <<'EOF'
{REPLICATION}
EOF
sed -e 's/^  timeout: 10min/  timeout: 10min\\n  rate_limit: 512KiB/' {CONFIG} > {SLOW_CONFIG}
{APPLIANCE} check-config --config {SLOW_CONFIG}
systemctl start appliance.service
"""


@pytest.fixture(autouse=True)
def _timed(request: pytest.FixtureRequest):
    started = time.monotonic()
    yield
    record_timing(f"test_replication: {request.node.name}", time.monotonic() - started)


@pytest.fixture(scope="module")
def rig(vm: VM) -> VM:
    started = time.monotonic()
    vm.ssh(SETUP, timeout=300)
    wait_until(vm, "test -S /var/lib/appliance/state/dock.sock", 180)
    record_timing("test_replication: set-up (pools, HQ user and sshd, keys, daemon)", time.monotonic() - started)
    LOGS.mkdir(parents=True, exist_ok=True)
    return vm


# -- helpers -------------------------------------------------------------------------------------


def wait_until(vm: VM, command: str, timeout: float, every: float = 2) -> str:
    deadline = time.monotonic() + timeout
    while True:
        r = vm.ssh(command, check=False, timeout=120)
        if r.returncode == 0:
            return r.stdout
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout} s: {command}\n{r.stdout}{r.stderr}")
        time.sleep(every)


def status(vm: VM) -> dict:
    return json.loads(vm.ssh(f"{APPLIANCE} replicate --json").stdout)


def wait_status(vm: VM, timeout: float, until=None, **expected) -> dict:  # type: ignore[no-untyped-def]
    """Until the replication status has these values (a finished run, not the running one)
    and ``until(status)`` holds."""
    deadline = time.monotonic() + timeout
    while True:
        st = status(vm)
        if st["state"] != "running" and all(st.get(k) == v for k, v in expected.items()) \
                and (until is None or until(st)):
            return st
        if time.monotonic() > deadline:
            raise AssertionError(f"replication status not {expected} after {timeout} s: "
                                 f"{json.dumps(st, indent=1)[:3000]}")
        time.sleep(3)


def replicate_now(vm: VM, config: str = CONFIG, name: str | None = None) -> tuple[int, dict]:
    r = vm.ssh(f"{APPLIANCE} replicate --now --json --config {config}", check=False, timeout=900)
    if name:
        keep_log(vm, name)
    return r.returncode, json.loads(r.stdout)


def keep_log(vm: VM, name: str) -> str:
    text = vm.ssh(f"cat {STATE}/last-run.log").stdout
    (LOGS / f"{name}.log").write_text(text)
    return text


def metrics(vm: VM) -> dict[str, float]:
    text = vm.ssh(f"{PYTHON} -c \"import urllib.request; print(urllib.request.urlopen("
                  f"'http://127.0.0.1:8080/metrics', timeout=30).read().decode())\"").stdout
    values = {}
    for line in text.splitlines():
        if line.startswith("appliance_replication_"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def health(vm: VM) -> dict:
    return json.loads(vm.ssh(f"{PYTHON} -c \"import urllib.request; print(urllib.request.urlopen("
                             f"'http://127.0.0.1:8080/api/v1/health', timeout=30).read().decode())\"").stdout)


def camera(tmp_path: Path, serial: str, *, big_mib: int = 0) -> CameraImage:
    image = make_camera_image(tmp_path / f"{serial}.img", serial, clips=1)
    if big_mib:
        big = tmp_path / f"{serial}-big.mp4"
        big.write_bytes(os.urandom(big_mib << 20))
        _copy_in(image, big, "DCIM/100MEDIA/REC0100.MP4")
    return image


def ingest(vm: VM, image: CameraImage, slot: int, officer: str) -> str:
    """Dock a camera image by hand and wait until its session is done; its session id."""
    started = time.monotonic()
    guest = f"/var/tmp/{image.serial}.img"
    vm.ssh(f"gunzip > {guest}", input=gzip.compress(image.path.read_bytes(), 1), timeout=300)
    vm.ssh(f"{APPLIANCE} device add {image.serial} --officer {officer} --model DSJ-TEST")
    loop = vm.ssh(f"losetup -fP --show {guest}").stdout.strip()
    vm.ssh(f"udevadm settle; {APPLIANCE} dock attach --slot {slot} --kind block {loop}p1")
    query = shlex.quote(f"SELECT id FROM sessions WHERE device_serial = '{image.serial}' AND state = 'done'")
    sid = wait_until(vm, f"sqlite3 {CATALOG} {query} | grep .", 240).strip()
    vm.ssh(f"{APPLIANCE} dock detach --slot {slot}; losetup -d {loop}; rm -f {guest}", check=False)
    record_timing(f"test_replication: ingest {image.serial}", time.monotonic() - started)
    return sid


def hq_snapshots(vm: VM, child: str) -> dict[str, str]:
    out = vm.ssh(f"zfs list -H -p -t snapshot -o name,guid -r {HQ}/{child}").stdout
    return {line.split("\t")[0].split("@")[1]: line.split("\t")[1] for line in out.splitlines()}


def station_snapshots(vm: VM, child: str) -> dict[str, str]:
    out = vm.ssh(f"zfs list -H -p -t snapshot -o name,guid -r tank/evidence/{child}").stdout
    return {line.split("\t")[0].split("@")[1]: line.split("\t")[1] for line in out.splitlines()}


def hq_hashes(vm: VM, snapshot: str, session_id: str) -> dict[str, str]:
    """SHA-256 of every camera file of a session, read at HQ from a received snapshot (mounted
    read-only for the check) and checked against the session's manifest there."""
    script = f"""
set -e
m=$(mktemp -d)
mount -t zfs -o ro {snapshot} $m
trap 'umount $m; rmdir $m' EXIT
d=$(dirname $(find $m -path '*/{session_id}/manifest.json'))
{PYTHON} - $d <<'EOF'
import hashlib, json, sys
from pathlib import Path
d = Path(sys.argv[1]); m = json.loads((d / "manifest.json").read_text()); out = {{}}
for f in m["files"]:
    data = (d / "files" / f["path"]).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    assert digest == f["sha256"] and len(data) == f["size"], f
    out[f["path"]] = digest
print(json.dumps(out))
EOF
"""
    return json.loads(vm.ssh(script).stdout)


def camera_media(image: CameraImage) -> dict[str, str]:
    return {k: v for k, v in image.files.items() if k.upper().endswith(".MP4")}


# -- the tests -----------------------------------------------------------------------------------


def test_an_ingested_session_arrives_at_hq_read_only_with_the_same_hashes(rig: VM, tmp_path: Path) -> None:
    vm = rig
    cam = camera(tmp_path, "DSJ00011A")
    sid = ingest(vm, cam, 1, "张三")
    # The daemon runs zfs-autobackup after_ingest_delay after the session (the start run is later).
    snap = f"ingest-{sid}"
    at_hq = f"zfs list -H -o name {HQ}/media@{snap}"
    st = wait_status(vm, 400, lambda _st: vm.ssh(at_hq, check=False).returncode == 0,
                     state="ok", pending_ingest=0)
    keep_log(vm, "first-run")
    assert st["reason"] in ("ingest", "start") and st["bytes_sent"] > 0 and st["datasets_behind"] == 0
    for child in ("media", "quarantine", "catalog"):
        assert station_snapshots(vm, child)[snap] == hq_snapshots(vm, child)[snap], child
        props = vm.ssh(f"zfs get -H -o value readonly,canmount,mounted {HQ}/{child}").stdout.split()
        assert props == ["on", "noauto", "no"], (child, props)
    assert "discs" not in vm.ssh(f"zfs list -H -o name -r {HQ}").stdout
    # At HQ the session snapshot carries the evidence hold too: a plain destroy is refused there.
    assert "appliance-evidence" in vm.ssh(f"zfs holds -H {HQ}/media@{snap}").stdout
    assert vm.ssh(f"zfs destroy {HQ}/media@{snap}", check=False).returncode != 0
    # The same files, with the same hashes, at HQ.
    assert hq_hashes(vm, f"{HQ}/media@{snap}", sid) == camera_media(cam)
    # zfs-autobackup holds the newest snapshot it shares with HQ: one of its own (--allow-empty),
    # so the session's snapshots carry only the evidence hold (a retention purge can release it).
    for child in ("media", "quarantine", "catalog"):
        tags = vm.ssh(f"zfs holds -H tank/evidence/{child}@{snap}").stdout.split("\t")[1::3]
        assert [t.strip() for t in tags] == ["appliance-evidence"], (child, tags)

    # The station's key can do nothing but what zfs-autobackup needs.
    ssh = f"ssh -F {STATE}/ssh_config appliance-hq"
    for command in (f"zfs destroy {HQ}/media@{snap}", "zfs list -r hq", "id", f"zfs set readonly=off {HQ}/media",
                    f"zfs recv -F -u -o readonly=on {HQ}/media"):
        r = vm.ssh(f"{ssh} {shlex.quote(command)}", check=False)
        assert r.returncode == 126 and "appliance-hq-shell: refused" in r.stderr, (command, r)
    vm.ssh(f"ssh -F {STATE}/ssh_config -O exit appliance-hq", check=False)

    m = metrics(vm)
    assert m["appliance_replication_enabled"] == 1
    assert m["appliance_replication_last_success_timestamp_seconds"] > 0
    assert m["appliance_replication_bytes_sent_total"] >= st["bytes_sent"]
    assert m["appliance_replication_lag_seconds"] == 0
    rep = health(vm)["replication"]
    assert rep["enabled"] and rep["state"] == "ok" and rep["lag_seconds"] == 0
    rows = vm.ssh(f"sqlite3 {CATALOG} \"SELECT details FROM audit_log WHERE action = 'replication.run'\"").stdout
    assert '"result": "ok"' in rows


def test_a_second_session_goes_as_an_incremental(rig: VM, tmp_path: Path) -> None:
    vm = rig
    before = status(vm)["run_id"]
    cam = camera(tmp_path, "DSJ00012B")
    sid = ingest(vm, cam, 2, "李四")
    st = wait_status(vm, 400, lambda st: st["run_id"] > before, state="ok", pending_ingest=0)
    assert st["reason"] == "ingest"
    parsed = parse_output(keep_log(vm, "incremental"))
    media = [t for t in parsed.transfers if t.target == f"{HQ}/media"]
    assert media and not any(t.full for t in media)  # nothing re-sent in full
    assert f"tank/evidence/media@ingest-{sid}" in [t.snapshot for t in media]
    assert hq_hashes(vm, f"{HQ}/media@ingest-{sid}", sid) == camera_media(cam)


def test_hq_unreachable_link_cut_and_hq_full_each_say_so_and_the_next_run_catches_up(
        rig: VM, tmp_path: Path) -> None:
    vm = rig
    # -- HQ unreachable: the daemon's run after the ingest fails at once, the lag grows --
    vm.ssh("systemctl stop hq-sshd.service")
    cam = camera(tmp_path, "DSJ00013C", big_mib=6)
    errors_before = metrics(vm).get("appliance_replication_errors_total", 0)
    before = status(vm)["run_id"]
    sid = ingest(vm, cam, 3, "王五")
    st = wait_status(vm, 200, lambda st: st["run_id"] > before, state="failed", last_error_kind="unreachable")
    keep_log(vm, "unreachable")
    assert "Connection refused" in st["last_error"] and st["pending_ingest"] == 1
    assert st["datasets_behind"] >= 1
    m = metrics(vm)
    assert m["appliance_replication_errors_total"] == errors_before + 1
    lag = m["appliance_replication_lag_seconds"]
    assert lag > 0
    time.sleep(3)
    assert metrics(vm)["appliance_replication_lag_seconds"] >= lag + 2  # computed at scrape: it grows
    rep = health(vm)["replication"]
    assert rep["state"] == "failed" and rep["last_error_kind"] == "unreachable" and rep["pending_ingest"] == 1

    # -- the link cut mid-send (512 KiB/s: the 6 MiB session takes a while) --
    vm.ssh("systemctl start hq-sshd.service")
    cut = vm.ssh(f"""
({APPLIANCE} replicate --now --json --config {SLOW_CONFIG} > /var/tmp/slow.json 2>/var/tmp/slow.err; echo $? > /var/tmp/slow.rc) &
for i in $(seq 1 300); do
  sent=$(cat {STATE}/meter/* 2>/dev/null | sort -n | tail -1)
  if pgrep -f "ssh -F .*zfs recv .*{HQ}/media" >/dev/null && [ "${{sent:-0}}" -gt 1500000 ]; then
    master=$(ssh -F {STATE}/ssh_config -O check appliance-hq 2>&1 | sed -n 's/.*pid=\\([0-9]*\\).*/\\1/p')
    kill -9 $master; echo "cut after $sent bytes"; break
  fi
  sleep 0.5
done
wait
cat /var/tmp/slow.rc
""", timeout=600).stdout
    assert "cut after" in cut, cut
    st = json.loads(vm.ssh("cat /var/tmp/slow.json").stdout)
    keep_log(vm, "link-cut")
    assert st["state"] == "failed" and st["last_error_kind"] == "link_cut", st
    assert "tank/evidence/media" in st["last_error"]
    token = vm.ssh(f"zfs get -H -o value receive_resume_token {HQ}/media").stdout.strip()
    assert token not in ("-", "")  # HQ kept the partial stream

    # -- HQ's quota full: the resumed stream cannot be received yet --
    used = int(vm.ssh(f"zfs get -H -p -o value used {HQ}").stdout)
    vm.ssh(f"zfs set quota={used + 256 * 1024} {HQ}")
    rc, st = replicate_now(vm, name="hq-full")
    assert rc == 1 and st["state"] == "failed" and st["last_error_kind"] == "target_full", st
    assert "quota exceeded" in st["last_error"] and st["pending_ingest"] == 1

    # -- room again: the next run resumes and catches up, nothing lost --
    vm.ssh(f"zfs set quota=none {HQ}")
    rc, st = replicate_now(vm, name="caught-up")
    assert rc == 0 and st["state"] == "ok" and st["pending_ingest"] == 0 and st["lag_seconds"] == 0, st
    assert st["resumed"] >= 1
    assert hq_hashes(vm, f"{HQ}/media@ingest-{sid}", sid) == camera_media(cam)
    # the daemon takes in the CLI's run within seconds (appliance.vault.replication.RELOAD_EVERY_S)
    deadline = time.monotonic() + 60
    while metrics(vm)["appliance_replication_lag_seconds"] != 0:
        assert time.monotonic() < deadline, "the daemon did not take in the CLI's run"
        time.sleep(2)


def test_snapshots_destroyed_at_hq_are_sent_again_and_a_wrong_station_clock_is_reported(rig: VM) -> None:
    vm = rig
    station = station_snapshots(vm, "media")
    at_hq = list(hq_snapshots(vm, "media"))
    last_session = max(i for i, n in enumerate(at_hq) if n.startswith("ingest-"))
    newest = at_hq[last_session:]  # the newest session snapshot and everything after it
    assert len(newest) >= 2
    for name in newest:  # a mistake at HQ, past the holds
        vm.ssh(f"for t in $(zfs holds -H {HQ}/media@{name} | cut -f2); do zfs release $t {HQ}/media@{name}; done;"
               f" zfs destroy {HQ}/media@{name}")
    # ... while the station's clock is a day behind
    vm.ssh("timedatectl set-ntp false; date -s @$(( $(date +%s) - 86400 )) > /dev/null")
    try:
        rc, st = replicate_now(vm, name="destroyed-at-hq")
    finally:
        vm.ssh(f"date -s @{int(time.time())} > /dev/null; timedatectl set-ntp true", check=False)
    assert rc == 0 and st["state"] == "ok", st
    again = hq_snapshots(vm, "media")
    for name in newest:
        assert again[name] == station[name], name  # the very same snapshots (guid) are back
    assert any("rolled back" in w for w in st["warnings"]), st["warnings"]
    assert any(w.startswith("the station clock is") for w in st["warnings"]), st["warnings"]
    assert st["pending_ingest"] == 0 and not st["gaps"]


def test_hq_status_lists_the_sessions_that_arrived(rig: VM) -> None:
    vm = rig
    sessions = vm.ssh(f"sqlite3 {CATALOG} \"SELECT id FROM sessions WHERE state = 'done' ORDER BY id\"").stdout.split()
    assert len(sessions) == 3
    started = time.monotonic()
    out = vm.ssh(f"{APPLIANCE} hq status --root hq/stations --verify --json", timeout=300).stdout
    record_timing("test_replication: appliance hq status --verify", time.monotonic() - started)
    (station,) = json.loads(out)
    assert station["station"] == "station" and station["partial_receive"] == []
    got = {s["session"]: s for s in station["sessions"]}
    assert sorted(got) == sessions
    for sid in sessions:
        s = got[sid]
        assert (s["state"], s["manifest"], s["verified"]) == ("arrived", "ok", "ok"), s
        assert s["snapshot"] == f"{HQ}/media@ingest-{sid}"
    assert {s["officer"] for s in got.values()} == {"张三", "李四", "王五"}
    text = vm.ssh(f"{APPLIANCE} hq status").stdout
    (LOGS / "hq-status.txt").write_text(text)
    assert text.startswith("station (hq/stations/station): 3 arrived")
    assert not vm.ssh("grep appliance-hq /proc/mounts", check=False).stdout  # nothing left mounted
