"""The daemon on real OpenZFS with real udev: cameras hot-plugged into the guest over QMP.

One VM for the module. Its set-up makes what Ansible makes on a box: a mirrored pool ``tank``
on the two virtio disks, ``tank/evidence`` at ``/tank/evidence``, a config.yaml whose slot map
names the ``ID_PATH`` of xHCI ports 1-8 (images/README.md) with ``ingest.wipe: after-verify``,
and the cameras registered with ``appliance device add``. Then ``appliance.service`` (the unit
the image ships, ``Restart=always``) runs the daemon, and the tests only dock and undock
cameras (FAT32 images built on the host with mkfs.vfat + mtools, holding real ffmpeg clips) and
look: the slot board (``/api/v1/slots``) and ``/metrics`` through an SSH tunnel to the guest's
127.0.0.1:8080 (the image has no curl), the catalog with sqlite3 in the guest, ZFS with ``zfs``,
and the camera images on the host with mtools after they are unplugged.

Copies that must be caught half-way are slowed down by QEMU itself
(``block_set_io_throttle`` on the camera's disk): the copy rate of a TCG guest varies with the
load of the host, a throttled camera does not.

The tests run in file order, each leaves no camera docked, and later ones reuse the vault that
earlier ones filled (the verify test reads the first test's sessions).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import struct
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from appliance.demo.cameras import CameraSpec, build_camera_image, generate_clip
from tests.system.conftest import record_timing
from tests.system.vm import VM, XHCI_PCI_ADDR, free_tcp_port

pytestmark = pytest.mark.system

APPLIANCE = "/opt/appliance/venv/bin/appliance"
CONFIG = "/etc/appliance/config.yaml"
CATALOG = "/tank/evidence/catalog/catalog.sqlite"
VAULT = "/tank/evidence"
DATASET = "tank/evidence"
STATION = "zfs-test"
TZ = "Asia/Shanghai"
HOLD_TAG = "appliance-evidence"
VENDOR = "ZHIFAYI"
MODEL = "DSJ-V9 BodyCam"
# The ID_PATH the guest's udev gives a camera on xHCI port N (images/README.md).
ID_PATHS = {port: f"pci-0000:00:{XHCI_PCI_ADDR:02x}.0-usb-0:{port}:1.0-scsi-0:0:0:0"
            for port in range(1, 9)}
# What the generic camera profile ingests (appliance/config.py, CameraProfile).
MEDIA_DIRS = ("DCIM", "VIDEO", "AUDIO", "PHOTO", "RECORD")
MEDIA_EXTENSIONS = (".mp4", ".mov", ".avi", ".ts", ".mkv", ".wav", ".mp3", ".aac", ".jpg", ".jpeg")
# Cameras: serial -> officer. Registered in the set-up; one per test scenario.
OFFICERS = {"DSJ1001": "王伟", "DSJ1002": "李娜", "DSJ1003": "张敏",  # three at once
            "DSJ2001": "刘洋",  # unplugged mid-copy
            "DSJ4001": "陈静",  # daemon killed mid-ingest
            "DSJ5001": "杨帆"}  # refused by the space reserve
BIG_FILE = "DCIM/20261127/DSJ_20261127_090000_0009.MP4"
BIG_SIZE = 96 << 20
# Bytes per second a throttled camera delivers (QEMU block_set_io_throttle).
THROTTLE_BPS = 6_000_000
MTOOLS_ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "MTOOLSRC": "/dev/null",
              "MTOOLS_SKIP_CHECK": "1"}


def config_yaml(reserve: str = "64MiB") -> str:
    slots = "\n".join(f"    {port}: {path}" for port, path in ID_PATHS.items())
    return f"""# written by tests/system/test_vault_zfs.py
station:
  id: {STATION}
  name: 系统测试执法站
  timezone: {TZ}
vault:
  backend: zfs
  dataset: {DATASET}
  path: {VAULT}
  reserve: {reserve}
dock:
  slots:
{slots}
ingest:
  wipe: after-verify
"""


# -- the guest -------------------------------------------------------------------------------


class Guest:
    """The booted appliance: shell, catalog, web API (through an SSH tunnel), daemon control."""

    def __init__(self, vm: VM, api_port: int) -> None:
        self.vm = vm
        self.api = f"http://127.0.0.1:{api_port}"

    def sh(self, command: str, **kwargs: object) -> str:
        return self.vm.ssh(command, **kwargs).stdout  # type: ignore[arg-type]

    def sql(self, query: str, *args: object) -> list[dict]:
        """Rows of a query on the catalog (sqlite3 in the guest, next to the running daemon)."""
        for arg in args:
            query = query.replace("?", "'" + str(arg).replace("'", "''") + "'", 1)
        out = self.sh(f"sqlite3 -json {CATALOG} {shlex.quote(query)}")
        return json.loads(out) if out.strip() else []

    def get(self, path: str, timeout: float = 20) -> bytes:
        with urllib.request.urlopen(self.api + path, timeout=timeout) as response:
            return response.read()

    def slots(self) -> dict[str, dict]:
        return {s["slot"]: s for s in json.loads(self.get("/api/v1/slots"))["slots"]}

    def metrics(self) -> dict[str, float]:
        """``/metrics`` as {'name{labels}': value}."""
        out = {}
        for line in self.get("/metrics").decode().splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def wait_metrics(self, *collectors: str, timeout: float = 90) -> dict[str, float]:
        """``/metrics`` once these collectors have run since the daemon (re)started: at start
        the slow ones (snapshots, scrub) run beside the web listener, not before it."""
        deadline = time.monotonic() + timeout
        while True:
            m = self.metrics()
            if all(m.get(f'appliance_collector_last_success_timestamp_seconds{{collector="{c}"}}', 0)
                   >= m["process_start_time_seconds"] for c in collectors):
                return m
            assert time.monotonic() < deadline, f"collectors {collectors} did not run in {timeout} s"
            time.sleep(1)

    def wait_api(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.get("/api/v1/health", timeout=10)
                return
            except (OSError, urllib.error.URLError):
                if time.monotonic() > deadline:
                    raise AssertionError(f"the daemon's web listener did not answer in {timeout} s\n"
                                         + self.journal(40)) from None
                time.sleep(1)

    def wait_slot(self, slot: int, states: tuple[str, ...], timeout: float = 240,
                  until: Callable[[dict], bool] | None = None) -> dict:
        """Poll the slot board until the slot's tile is in one of ``states`` (and ``until``)."""
        deadline = time.monotonic() + timeout
        tile: dict = {}
        while time.monotonic() < deadline:
            try:
                tile = self.slots()[str(slot)]
            except (OSError, urllib.error.URLError):  # the daemon is restarting
                time.sleep(0.5)
                continue
            if tile["state"] in states and (until is None or until(tile)):
                return tile
            time.sleep(0.3)
        raise AssertionError(f"slot {slot} not in {states} after {timeout} s: {tile}\n" + self.journal(30))

    def daemon(self) -> dict[str, str]:
        out = self.sh("systemctl show -p MainPID,NRestarts,ActiveState,SubState appliance.service")
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def restart_daemon(self) -> None:
        self.sh("systemctl restart appliance.service", timeout=120)
        self.wait_api()

    def journal(self, lines: int = 60) -> str:
        return "--- journal of appliance.service ---\n" + self.sh(
            f"journalctl -u appliance.service -o cat --no-pager -n {lines}", check=False)

    def appliance(self, args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.vm.ssh(f"{APPLIANCE} {args} --config {CONFIG}", check=check, timeout=300)

    def session_of(self, serial: str) -> dict:
        rows = self.sql("SELECT * FROM sessions WHERE device_serial = ? ORDER BY started_at", serial)
        assert len(rows) == 1, f"{serial}: expected one session, found {rows}"
        return rows[0]

    def recordings(self, session_id: str) -> dict[str, str]:
        """rel_path -> sha256 of the session's recordings; fails on a duplicate."""
        rows = self.sql("SELECT rel_path, sha256, vault_path FROM recordings WHERE session_id = ?",
                        session_id)
        names = [r["rel_path"] for r in rows]
        assert len(names) == len(set(names)), f"duplicate recordings: {sorted(names)}"
        return {r["rel_path"]: r["sha256"] for r in rows}

    def audit(self, session_id: str) -> list[str]:
        return [r["action"] for r in self.sql(
            "SELECT action FROM audit_log WHERE subject = ? ORDER BY seq", session_id)]

    def vault_files(self, vault_dir: str) -> dict[str, str]:
        """Files below a session folder (relative to it) -> sha256, read in the guest."""
        out = self.sh(f"cd {VAULT}/{shlex.quote(vault_dir)} && find . -type f -print0 | "
                      "xargs -0 -r sha256sum")
        return {line[66:].removeprefix("./"): line[:64] for line in out.splitlines()}


@dataclass
class HostCamera:
    """A camera image on the host and the files it held when it was built."""

    serial: str
    image: Path
    files: dict[str, str]  # path on the camera -> sha256

    @property
    def media(self) -> dict[str, str]:
        return {rel: digest for rel, digest in self.files.items() if is_media(rel)}


def is_media(rel: str) -> bool:
    return rel.split("/")[0].upper() in MEDIA_DIRS and rel.lower().endswith(MEDIA_EXTENSIONS)


def read_camera(image: Path) -> dict[str, str]:
    """Every file on a camera image (read on the host with mtools) -> sha256."""
    with tempfile.TemporaryDirectory(prefix="camera-read-") as tmp:
        subprocess.run(["mcopy", "-s", "-n", "-m", "-i", str(image), "::*", tmp],
                       check=True, capture_output=True, env=MTOOLS_ENV)
        return {str(p.relative_to(tmp)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(Path(tmp).rglob("*")) if p.is_file()}


def read_camera_file(image: Path, rel: str) -> bytes:
    return subprocess.run(["mtype", "-i", str(image), f"::{rel}"], check=True, capture_output=True,
                          env=MTOOLS_ENV).stdout


@pytest.fixture(scope="module")
def cameras_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cameras")


@pytest.fixture(scope="module")
def make_camera(cameras_dir: Path) -> Callable[..., HostCamera]:
    """Build a FAT32 camera image with real ffmpeg clips (appliance.demo.cameras), optionally
    with one big recording: a real MP4 clip followed by a large ``free`` box (still a valid
    MP4 file, and as slow to copy as a long recording)."""

    def make(serial: str, *, big: bool = False) -> HostCamera:
        extra = {}
        size = 64 << 20
        if big:
            clip = generate_clip(cameras_dir / "clips", 2.0, 9).read_bytes()
            pad = os.urandom(BIG_SIZE)
            extra[BIG_FILE] = clip + struct.pack(">I4s", 8 + len(pad), b"free") + pad
            size = BIG_SIZE + (64 << 20)
        spec = CameraSpec(serial=serial, officer=OFFICERS[serial], image_size=size, extra_files=extra)
        image = build_camera_image(spec, cameras_dir / f"{serial}.img", cameras_dir / "clips")
        camera = HostCamera(serial, image, read_camera(image))
        assert len(camera.media) >= 4, camera.files
        return camera

    return make


@pytest.fixture(scope="module")
def guest(vm: VM) -> Iterator[Guest]:
    """The VM made into a field-station box: pool, dataset, config, registered cameras."""
    started = time.monotonic()
    # The unit has been failing and restarting since boot (no pool): hold it while the box is
    # set up, as Ansible does, so that the CLI below is the first to open the vault.
    vm.ssh("systemctl stop appliance.service", timeout=120)
    vm.ssh("zpool create -f -o ashift=12 -O atime=off tank mirror "
           "/dev/disk/by-id/virtio-pool0 /dev/disk/by-id/virtio-pool1")
    vm.ssh(f"zfs create -o mountpoint={VAULT} {DATASET}")
    vm.ssh(f"cat > {CONFIG}", input=config_yaml().encode())
    # Cameras registered before the daemon's first start: the CLI makes the vault's datasets
    # first, so the catalog it writes is the one on the catalog dataset, not a file in the
    # parent's folder that the catalog dataset's mount would hide.
    # `appliance device add` for each camera, in one Python process: under TCG every
    # interpreter start costs seconds.
    adds = [["device", "add", s, "--officer", o, "--brand", "执法仪", "--model", "DSJ-V9",
             "--config", CONFIG] for s, o in OFFICERS.items()]
    vm.ssh(f"{APPLIANCE.removesuffix('appliance')}python -c " + shlex.quote(
        "import sys; from appliance.cli import main\n"
        f"for argv in {adds!r}:\n    main(argv) == 0 or sys.exit(1)"), timeout=300)
    vm.ssh("systemctl start appliance.service", timeout=120)
    api_port = free_tcp_port()
    tunnel = subprocess.Popen(
        ["ssh", "-N", "-i", str(vm.ssh_key), "-p", str(vm.ssh_port),
         "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
         "-o", "ExitOnForwardFailure=yes", "-o", "ServerAliveInterval=10",
         "-L", f"127.0.0.1:{api_port}:127.0.0.1:8080", "root@127.0.0.1"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    g = Guest(vm, api_port)
    try:
        g.wait_api()
        assert {r["serial"] for r in g.sql("SELECT serial FROM devices")} == set(OFFICERS)
        record_timing("test_vault_zfs: set-up (pool, dataset, daemon, registry)",
                      time.monotonic() - started)
        yield g
    finally:
        tunnel.terminate()
        tunnel.wait(timeout=10)


@pytest.fixture(autouse=True)
def _timed(request: pytest.FixtureRequest):
    started = time.monotonic()
    yield
    record_timing(f"test_vault_zfs: {request.node.name}", time.monotonic() - started)


def throttle(vm: VM, port: int, bps_rd: int) -> None:
    """Limit how fast the camera on ``port`` can be read (0: no limit)."""
    assert vm.qmp is not None
    vm.qmp.execute("block_set_io_throttle", id=f"{vm.cameras[port].device_id}-lun0",
                   bps=0, bps_rd=bps_rd, bps_wr=0, iops=0, iops_rd=0, iops_wr=0)


def dock(guest: Guest, camera: HostCamera, port: int, *, throttled: bool = False) -> None:
    guest.vm.hotplug_camera(camera.image, port=port, serial=camera.serial, vendor=VENDOR, model=MODEL)
    if throttled:
        throttle(guest.vm, port, THROTTLE_BPS)


def undock(guest: Guest, port: int) -> None:
    serial = guest.vm.cameras[port].serial
    guest.vm.unplug_camera(port)
    guest.vm.wait_for_no_block_device(ID_SERIAL_SHORT=serial)


def no_partials(guest: Guest) -> None:
    left = guest.sh(f"find {VAULT}/media {VAULT}/quarantine -name '.partial-*'")
    assert not left.strip(), f"temporary files left in the vault:\n{left}"


def assert_sealed(guest: Guest, session: dict) -> None:
    """Committed, snapshotted (media, quarantine, catalog at once) and held."""
    sid = session["id"]
    assert session["state"] == "done", session
    assert session["manifest_sha256"], session
    assert session["snapshot"] == f"{DATASET}/media@ingest-{sid}"
    snaps = [f"{DATASET}/{child}@ingest-{sid}" for child in ("media", "quarantine", "catalog")]
    listed = guest.sh("zfs list -H -t snapshot -o name " + " ".join(snaps)).split()
    assert sorted(listed) == sorted(snaps)
    holds = guest.sh("zfs holds -H " + " ".join(snaps))
    assert {tuple(line.split("\t")[:2]) for line in holds.splitlines()} == \
        {(s, HOLD_TAG) for s in snaps}
    # A held snapshot cannot be destroyed.
    refused = guest.vm.ssh(f"zfs destroy {snaps[0]}", check=False)
    assert refused.returncode != 0 and "busy" in refused.stderr


# -- the tests -------------------------------------------------------------------------------


def test_vault_datasets_made_by_the_daemon(guest: Guest) -> None:
    """The daemon made its child datasets under the operator's parent, mounted under vault.path."""
    out = guest.sh(f"zfs list -H -r -o name,mountpoint,mounted {DATASET}")
    rows = {line.split("\t")[0]: line.split("\t")[1:] for line in out.splitlines()}
    for child in ("media", "quarantine", "catalog", "discs"):
        assert rows[f"{DATASET}/{child}"] == [f"{VAULT}/{child}", "yes"], rows
    props = guest.sh(f"zfs get -H -o name,property,value recordsize,compression,atime,utf8only,exec,"
                     f"primarycache,readonly,autobackup:{STATION} "
                     f"{DATASET}/media {DATASET}/catalog {DATASET}/discs")
    got = {(n.rsplit("/", 1)[1], p): v for n, p, v in (line.split("\t") for line in props.splitlines())}
    assert got[("media", "recordsize")] == "1M" and got[("media", "compression")] == "off"
    assert got[("media", "utf8only")] == "on" and got[("media", "exec")] == "off"
    assert got[("media", "atime")] == "off" and got[("media", "primarycache")] == "metadata"
    assert {got[(c, "readonly")] for c in ("media", "catalog", "discs")} == {"off"}
    # Nothing writes into the parent: a child that is not mounted cannot be written around.
    assert guest.sh(f"zfs get -H -o value readonly {DATASET}").strip() == "on"
    touch = guest.vm.ssh(f"touch {VAULT}/stray", check=False)
    assert touch.returncode != 0 and "Read-only file system" in touch.stderr, touch
    assert got[("catalog", "recordsize")] == "16K" and got[("catalog", "compression")] == "lz4"
    assert got[("media", f"autobackup:{STATION}")] == "true"
    assert got[("catalog", f"autobackup:{STATION}")] == "true"
    assert got[("discs", f"autobackup:{STATION}")] == "false"
    # The catalog the daemon and the CLI use lives on the catalog dataset.
    assert guest.sh(f"findmnt -n -o SOURCE --target {CATALOG}").strip() == f"{DATASET}/catalog"
    # The daemon made them with their properties; `zpool history` lists every command that
    # changed the pool (the last test checks that no restart ever ran a `zfs set`).
    history = guest.sh("zpool history tank")
    assert history.count("zfs create") == 5, history  # tank/evidence and the daemon's four


def test_three_cameras_at_once(guest: Guest, make_camera: Callable[..., HostCamera]) -> None:
    cams = {port: make_camera(serial) for port, serial in zip((1, 2, 3), ("DSJ1001", "DSJ1002", "DSJ1003"))}
    for port, cam in cams.items():
        dock(guest, cam, port)
    docked_at = datetime.now(ZoneInfo(TZ))
    # The slot map is written against what the guest's udev reports for each port.
    for port, cam in cams.items():
        (props,) = guest.vm.wait_for_block_device(ID_SERIAL_SHORT=cam.serial, ID_FS_TYPE="vfat").values()
        assert props["ID_PATH"] == ID_PATHS[port]
    tiles = {port: guest.wait_slot(port, ("done", "failed", "interrupted")) for port in cams}

    for port, cam in cams.items():
        tile = tiles[port]
        assert tile["state"] == "done", tile
        assert tile["serial"] == cam.serial and tile["officer"] == OFFICERS[cam.serial]
        assert tile["port_path"] == ID_PATHS[port]
        assert tile["files_done"] == tile["files_total"] == len(cam.media)
        session = guest.session_of(cam.serial)
        assert session["slot"] == str(port) and session["port_path"] == ID_PATHS[port]
        assert_sealed(guest, session)
        # Every media file, byte for byte as on the camera; nothing else.
        assert guest.recordings(session["id"]) == cam.media
        stored = guest.vault_files(session["vault_dir"])
        assert {k.removeprefix("files/"): v for k, v in stored.items() if k != "manifest.json"} == cam.media
        # Mounted through the kernel's vfat driver.
        start = guest.sql("SELECT details FROM audit_log WHERE action = 'session.start' AND subject = ?",
                          session["id"])
        assert json.loads(start[0]["details"])["driver"] == "kernel"
        assert json.loads(start[0]["details"])["fs"] == "vfat"
        # Read-only files with the immutable attribute; not even root can change them.
        folder = f"{VAULT}/{session['vault_dir']}"
        modes = guest.sh(f"find {folder} -type f -exec stat -c '%a %n' {{}} +").splitlines()
        assert modes and all(m.startswith("444 ") for m in modes), modes
        dirs = guest.sh(f"find {folder} -type d -exec stat -c '%a %n' {{}} +").splitlines()
        assert all(d.startswith("555 ") for d in dirs), dirs
        attrs = guest.sh(f"find {folder} -type f -exec lsattr {{}} +").splitlines()
        assert len(attrs) == len(modes) and all("i" in a.split()[0] for a in attrs), attrs
        victim = f"{folder}/manifest.json"
        refused = guest.vm.ssh(f"echo x >> {victim}", check=False)
        assert refused.returncode != 0 and "Operation not permitted" in refused.stderr
        assert guest.vm.ssh(f"rm -f {victim}", check=False).returncode != 0
        # Clock set, camera wiped of exactly the verified files.
        assert session["clock_synced_at"] and session["wiped_files"] == len(cam.media)
        # The other sessions of the three are not affected by this one: one session per camera.
    audit = guest.sql("SELECT action FROM audit_log WHERE action = 'session.done'")
    assert len(audit) == 3

    for port in cams:
        undock(guest, port)
        guest.wait_slot(port, ("empty",), timeout=60)
    for cam in cams.values():
        left = read_camera(cam.image)
        assert not any(is_media(rel) for rel in left), f"{cam.serial} not wiped: {sorted(left)}"
        # Only media was deleted; the identity file and the camera's own files stay.
        assert {k: v for k, v in left.items() if k != "time.txt"} == \
            {k: v for k, v in cam.files.items() if not is_media(k)}
        clock = read_camera_file(cam.image, "time.txt").decode("ascii").strip()
        written = datetime.strptime(clock, "%Y-%m-%d %H:%M:%S").replace(tzinfo=ZoneInfo(TZ))
        assert abs(written - docked_at) < timedelta(minutes=5), (clock, docked_at)


def test_verify_clean_then_names_an_altered_file_and_a_released_hold(guest: Guest) -> None:
    clean = guest.appliance("verify")
    assert clean.stdout.strip().endswith("OK"), clean.stdout
    session = guest.session_of("DSJ1002")
    rel = guest.sql("SELECT vault_path FROM recordings WHERE session_id = ? ORDER BY vault_path LIMIT 1",
                    session["id"])[0]["vault_path"]
    path = f"{VAULT}/{rel}"
    snap_copy = f"{VAULT}/media/.zfs/snapshot/ingest-{session['id']}/{rel.removeprefix('media/')}"

    # Someone with root takes the protection off and changes one byte; someone releases the
    # hold on the session's *catalog* snapshot (the media's stays held).
    guest.sh(f"chattr -i {shlex.quote(path)} && chmod u+w {shlex.quote(path)} && "
             f"printf X | dd of={shlex.quote(path)} bs=1 seek=4096 conv=notrunc status=none")
    catalog_snap = f"{DATASET}/catalog@ingest-{session['id']}"
    guest.sh(f"zfs release {HOLD_TAG} {catalog_snap}")
    found = guest.appliance("verify", check=False)
    assert found.returncode == 1, found.stdout + found.stderr
    problems = sorted(line for line in found.stdout.splitlines() if not line.startswith("verify:"))
    assert len(problems) == 3, found.stdout
    assert problems[0].startswith(f"DIFFERS   {rel}: sha256 is "), found.stdout
    assert problems[1].startswith(f"SNAPSHOT  {rel}: snapshot copy differs from the live file"), found.stdout
    assert problems[2] == f"SNAPSHOT  {catalog_snap}: snapshot is not held", found.stdout
    assert found.stdout.splitlines()[-1].endswith("pool ONLINE: 3 problem(s)")

    # Put right from the snapshot, and held again: clean.
    guest.sh(f"cat {shlex.quote(snap_copy)} > {shlex.quote(path)} && chmod 444 {shlex.quote(path)} "
             f"&& chattr +i {shlex.quote(path)} && zfs hold {HOLD_TAG} {catalog_snap}")
    again = guest.appliance("verify")
    assert again.stdout.strip().endswith("OK"), again.stdout
    runs = guest.sql("SELECT problems FROM verify_runs ORDER BY id")
    assert [r["problems"] for r in runs] == [0, 3, 0]


def test_unplugged_mid_copy_and_docked_again(guest: Guest, make_camera: Callable[..., HostCamera]) -> None:
    cam = make_camera("DSJ2001", big=True)
    dock(guest, cam, 4, throttled=True)
    guest.wait_slot(4, ("copying",), until=lambda t: t["bytes_done"] >= 16 << 20, timeout=180)
    undock(guest, 4)
    tile = guest.wait_slot(4, ("interrupted", "failed", "done"), timeout=60)
    assert tile["state"] == "interrupted", tile
    assert "removed during copy" in tile["message_en"]
    first = guest.session_of(cam.serial)
    assert first["state"] == "interrupted" and not first["manifest_sha256"] and not first["snapshot"]
    no_partials(guest)
    # Nothing was written to the camera: no clock file, nothing wiped.
    assert read_camera(cam.image) == cam.files

    # Docked again, on another slot: the same session continues and completes.
    dock(guest, cam, 5)
    tile = guest.wait_slot(5, ("done", "failed", "interrupted"), timeout=240)
    assert tile["state"] == "done", tile
    session = guest.session_of(cam.serial)
    assert session["id"] == first["id"] and session["slot"] == "5"
    assert_sealed(guest, session)
    assert guest.recordings(session["id"]) == cam.media  # nothing lost, nothing twice
    stored = guest.vault_files(session["vault_dir"])
    assert {k.removeprefix("files/"): v for k, v in stored.items() if k != "manifest.json"} == cam.media
    actions = guest.audit(session["id"])
    assert actions.count("session.start") == 1 and "session.interrupted" in actions
    assert actions.index("session.interrupted") < actions.index("session.resume") \
        < actions.index("session.done")
    no_partials(guest)
    undock(guest, 5)
    assert not any(is_media(rel) for rel in read_camera(cam.image))


def test_daemon_killed_mid_ingest_is_restarted_and_resumes(
        guest: Guest, make_camera: Callable[..., HostCamera]) -> None:
    cam = make_camera("DSJ4001", big=True)
    before = guest.daemon()
    dock(guest, cam, 6, throttled=True)
    guest.wait_slot(6, ("copying",), until=lambda t: t["bytes_done"] >= 16 << 20, timeout=180)
    guest.sh("systemctl kill -s KILL appliance.service")
    throttle(guest.vm, 6, 0)
    # systemd starts it again (Restart=always); at start it finds the session unfinished,
    # marks it interrupted, and the camera still in its slot resumes it.
    deadline = time.monotonic() + 120
    while (now := guest.daemon())["MainPID"] in ("0", before["MainPID"]) or now["ActiveState"] != "active":
        assert time.monotonic() < deadline, now
        time.sleep(1)
    assert int(now["NRestarts"]) == int(before["NRestarts"]) + 1
    guest.wait_api()
    tile = guest.wait_slot(6, ("done", "failed"), timeout=240)
    assert tile["state"] == "done", tile
    session = guest.session_of(cam.serial)
    assert_sealed(guest, session)
    assert guest.recordings(session["id"]) == cam.media
    actions = guest.audit(session["id"])
    assert actions.index("session.interrupted") < actions.index("session.resume") \
        < actions.index("session.done")
    interrupted = guest.sql("SELECT details FROM audit_log WHERE action = 'session.interrupted'"
                            " AND subject = ?", session["id"])
    assert "daemon restarted during 'copying'" in interrupted[0]["details"]
    assert f"recovered session {session['id']}: copying -> interrupted" in guest.journal(300)
    no_partials(guest)
    undock(guest, 6)
    assert not any(is_media(rel) for rel in read_camera(cam.image))


def test_space_and_pool_health_in_metrics_and_the_reserve(
        guest: Guest, make_camera: Callable[..., HostCamera]) -> None:
    m = guest.metrics()
    assert m["appliance_vault_pool_healthy"] == 1
    assert m['appliance_vault_pool_state{state="ONLINE"}'] == 1
    assert m["appliance_vault_free_bytes"] > 0
    assert m["appliance_verify_problems"] == 0 and m["appliance_verify_last_run_timestamp_seconds"] > 0

    # A scrub, a degraded pool and a reserve larger than the pool: the restart makes the
    # daemon collect at once what it would otherwise see within its collectors' periods.
    guest.sh("zpool scrub -w tank", timeout=300)
    guest.sh("zpool offline tank /dev/disk/by-id/virtio-pool1")
    guest.vm.ssh(f"cat > {CONFIG}", input=config_yaml(reserve="1TB").encode())
    guest.restart_daemon()
    m = guest.wait_metrics("vault", "scrub", "snapshots")
    assert m["appliance_vault_pool_healthy"] == 0
    assert m['appliance_vault_pool_state{state="DEGRADED"}'] == 1
    assert m["appliance_vault_pool_last_scrub_errors"] == 0
    assert abs(m["appliance_vault_pool_last_scrub_timestamp_seconds"] - time.time()) < 600
    assert m["appliance_vault_reserve_bytes"] == 1e12
    sessions = len(guest.sql("SELECT id FROM sessions WHERE snapshot IS NOT NULL"))
    assert sessions == 5 and m["appliance_vault_snapshots_held"] == 3 * sessions
    # Space per dataset, as zfs reports it (the collector ran at this start, nothing was
    # written since: equal but for the catalog's few pages).
    zfs = {line.split("\t")[0]: [int(x) for x in line.split("\t")[1:]] for line in guest.sh(
        f"zfs list -H -p -r -o name,available,used {DATASET}").splitlines()}
    assert len(zfs) == 5
    for name, (avail, used) in zfs.items():
        assert abs(m[f'appliance_vault_dataset_free_bytes{{dataset="{name}"}}'] - avail) < 4 << 20
        assert abs(m[f'appliance_vault_dataset_used_bytes{{dataset="{name}"}}'] - used) < 4 << 20
    assert m[f'appliance_vault_dataset_used_bytes{{dataset="{DATASET}/media"}}'] > 2 * BIG_SIZE
    assert abs(m["appliance_vault_free_bytes"] - zfs[DATASET][0]) < 4 << 20

    cam = make_camera("DSJ5001")
    dock(guest, cam, 7)
    tile = guest.wait_slot(7, ("failed", "done", "interrupted"))
    assert tile["state"] == "failed", tile
    assert "vault full" in tile["message_en"] and "reserve is 1000000000000" in tile["message_en"]
    assert tile["message_zh"] == "证据库空间不足，请联系管理员"
    refused = guest.session_of(cam.serial)
    assert refused["state"] == "failed" and "reserve" in refused["reason"]
    assert not guest.recordings(refused["id"])
    assert guest.metrics()["appliance_vault_full"] == 1
    undock(guest, 7)
    assert read_camera(cam.image) == cam.files  # not touched

    # Space back (and the pool whole again): the same camera docked again is ingested.
    guest.sh("zpool online tank /dev/disk/by-id/virtio-pool1 && zpool wait -t resilver tank")
    guest.vm.ssh(f"cat > {CONFIG}", input=config_yaml().encode())
    guest.restart_daemon()
    assert guest.metrics()["appliance_vault_pool_healthy"] == 1
    dock(guest, cam, 7)
    tile = guest.wait_slot(7, ("done", "failed"), timeout=240)
    assert tile["state"] == "done", tile
    session = guest.session_of(cam.serial)
    assert session["id"] == refused["id"]
    assert_sealed(guest, session)
    assert guest.recordings(session["id"]) == cam.media
    undock(guest, 7)
    # The restarts of the daemon on existing datasets changed no property (an
    # equal value read back in another form, "1M" as 1048576, used to be set again each time).
    history = [line for line in guest.sh("zpool history tank").splitlines() if "zfs set" in line]
    assert [line.split(" ", 1)[1] for line in history] == [f"zfs set readonly=on {DATASET}"], history


def test_released_session_snapshot_waits_for_a_hold_not_ours(guest: Guest) -> None:
    """A retention purge releases the evidence hold and destroys the session's snapshots; one
    that zfs-autobackup still holds goes when that hold is released, never fails the purge."""
    sid = "20260101T000000-PURGETEST-0000"
    snaps = [f"{DATASET}/{c}@ingest-{sid}" for c in ("media", "quarantine", "catalog")]
    guest.sh(f"zfs snapshot {' '.join(snaps)} && zfs hold appliance-evidence {' '.join(snaps)}"
             f" && zfs hold zfs_autobackup:{STATION} {snaps[0]}")
    released = guest.sh(f"{APPLIANCE.removesuffix('appliance')}python -c " + shlex.quote(
        "from pathlib import Path\nfrom appliance.config import load_config\nfrom appliance.vault import open_vault\n"
        f"print(*open_vault(load_config(Path({CONFIG!r}))).release_snapshot({sid!r}))"), timeout=300)
    assert sorted(released.split()) == sorted(snaps)
    left = guest.sh(f"zfs list -H -t snapshot -o name,defer_destroy,userrefs -r {DATASET} | grep {sid} || true")
    assert left.split() == [snaps[0], "on", "1"], left  # only zfs-autobackup's hold keeps it
    assert "appliance-evidence" not in guest.sh(f"zfs holds -H {snaps[0]}")
    guest.sh(f"zfs release zfs_autobackup:{STATION} {snaps[0]}")
    assert sid not in guest.sh(f"zfs list -H -t snapshot -o name -r {DATASET}")


def test_weekly_verify_timer(guest: Guest) -> None:
    """The image runs `appliance verify` weekly; its last run shows in /metrics."""
    assert guest.sh("systemctl is-enabled appliance-verify.timer").strip() == "enabled"
    assert guest.sh("systemctl is-active appliance-verify.timer").strip() == "active"
    assert "OnCalendar=Sun *-*-* 02:00:00" in guest.sh("systemctl cat appliance-verify.timer")
    before = len(guest.sql("SELECT id FROM verify_runs"))
    guest.sh("systemctl start appliance-verify.service", timeout=600)  # oneshot: waits for the end
    assert guest.sh("systemctl show -p Result --value appliance-verify.service").strip() == "success"
    runs = guest.sql("SELECT problems, files_checked FROM verify_runs ORDER BY id")
    assert len(runs) == before + 1 and runs[-1]["problems"] == 0
    assert runs[-1]["files_checked"] == len(guest.sql("SELECT id FROM recordings"))
    # Everything the tests left behind is still as the catalog says.
    assert re.search(r"verify: \d+ files, \d+ bytes checked, pool ONLINE: OK",
                     guest.sh("journalctl -u appliance-verify.service -o cat --no-pager"))


def test_a_purge_frees_the_space_that_a_later_long_term_session_held(guest: Guest) -> None:
    """Every held snapshot is of the whole media dataset: the newest session, kept long-term,
    holds the blocks of every older recording. After the purge of those, one new held
    snapshot, checked with `zfs diff` against each held one, stands in for them all, and
    the purged recordings' space really comes back."""
    newest = guest.sh(f"zfs list -H -t snapshot -o name -s createtxg -d 1 {DATASET}/media"
                      " | grep @ingest- | tail -1").strip()
    keep_sid = newest.split("@ingest-", 1)[1]
    purged_bytes = sum(r["size"] for r in guest.sql(
        "SELECT size FROM recordings WHERE session_id != ? AND purged_at IS NULL AND vault_path LIKE 'media/%'",
        keep_sid))
    assert purged_bytes > 64 << 20, "the earlier tests left too little to purge"
    used_before = int(guest.sh(f"zfs list -H -p -o used {DATASET}/media").strip())
    script = "\n".join([
        "import json",
        "from pathlib import Path",
        "from appliance.catalog import cases, retention",
        "from appliance.catalog.db import Catalog",
        "from appliance.config import load_config",
        "from appliance.timeutil import utcnow",
        "from appliance.vault import open_vault",
        f"vault = open_vault(load_config(Path({CONFIG!r})))",
        f"cat = Catalog(Path({CATALOG!r}))",
        "old = '2025-01-01T00:00:00+00:00'",
        "cat.run(lambda c: c.execute('UPDATE recordings SET ingested_at = ?, camera_mtime = ?"
        " WHERE purged_at IS NULL', (old, old)))",
        f"keep = cat.run(lambda c: [r[0] for r in c.execute('SELECT id FROM recordings WHERE session_id = ?',"
        f" ({keep_sid!r},))])",
        "cat.run(cases.tag_recordings, keep, actor='dm', category='seizure')",
        "pid = cat.run(retention.propose, now=utcnow(), months=6, actor='device_manager')",
        "cat.run(retention.decide, pid, actor='leader', approve=True, reason='保存期满')",
        "r = retention.carry_out(cat, vault, pid, actor='device_manager')",
        "print(json.dumps({'number': r.number, 'purged': r.purged, 'removed': r.removed,"
        " 'resealed': r.resealed, 'retired': r.retired, 'problem': r.reseal_problem}))",
    ])
    out = guest.sh(f"{APPLIANCE.removesuffix('appliance')}python -c {shlex.quote(script)}", timeout=600)
    result = json.loads(out.strip().splitlines()[-1])
    assert result["problem"] is None and result["removed"] == result["purged"] > 0, result
    resealed = f"{DATASET}/media@resealed-{result['number']}"
    assert result["resealed"] == resealed
    assert newest in result["retired"], result

    # Only the new snapshot is held now; every session still kept refers to it.
    left = guest.sh(f"zfs list -H -t snapshot -o name -r {DATASET}").split()
    assert sorted(left) == sorted(f"{DATASET}/{c}@resealed-{result['number']}"
                                  for c in ("media", "quarantine", "catalog")), left
    assert f"{resealed}\t{HOLD_TAG}" in guest.sh(f"zfs holds -H {resealed}")
    live = guest.sql("SELECT DISTINCT snapshot FROM sessions WHERE snapshot IS NOT NULL"
                     " AND snapshot_released_at IS NULL")
    assert [r["snapshot"] for r in live] == [resealed]
    # The kept session's files are in it, and the purged recordings' space came back.
    guest.sh("zpool sync tank && zpool wait -t free tank", timeout=300)
    used_after = int(guest.sh(f"zfs list -H -p -o used {DATASET}/media").strip())
    assert used_before - used_after > 0.9 * purged_bytes, (used_before, used_after, purged_bytes)
    kept = guest.sql("SELECT vault_path, sha256 FROM recordings WHERE session_id = ?", keep_sid)
    assert kept
    for row in kept:
        inside = f"{VAULT}/media/.zfs/snapshot/resealed-{result['number']}/{row['vault_path'].removeprefix('media/')}"
        assert guest.sh(f"sha256sum {shlex.quote(inside)}").split()[0] == row["sha256"]
    clean = guest.appliance("verify")
    assert clean.stdout.strip().endswith("OK"), clean.stdout
    actions = [r["action"] for r in guest.sql("SELECT action FROM audit_log WHERE subject = ?", result["number"])]
    assert "snapshot.reseal" in actions and "purge.done" in actions
