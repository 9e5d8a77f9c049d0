"""Boot the appliance image in QEMU and drive it: SSH, USB camera hot-plug over QMP, shutdown.

The machine looks like a field-station box with its docking hardware:

- the image as a virtio root disk, behind a throw-away qcow2 overlay so that a test never
  changes the cached image;
- two or more blank virtio disks for the ZFS pool (``/dev/disk/by-id/virtio-pool0`` ...);
- an xHCI controller with eight ports, USB 2 and USB 3 (``qemu-xhci,p2=8,p3=8``), at a
  fixed PCI address, so that the ``ID_PATH`` of each port is the same on every run: the dock's
  slot map is written against those values;
- QMP on a unix socket, SSH forwarded on 127.0.0.1 only, the serial console in a log file.

Under TCG (no usable KVM here) the guest runs at a fraction of the host's speed: measure speed
on the host, correctness in the guest.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.system.qmp import QMPClient

# The xHCI controller's slot on the PCI root bus. Changing it changes every ID_PATH.
XHCI_PCI_ADDR = 0x10
# qemu-xhci,p2=8,p3=8 has eight physical ports, 1-8, each with a USB 2 and a USB 3 side (the
# guest sees two root hubs). QEMU attaches a device on the fastest side it supports: usb-bot
# can do SuperSpeed, so a camera lands on the USB 3 root hub (5000M) at the same port number.
USB_PORTS = range(1, 9)


class VMError(Exception):
    """The virtual machine did not do what the test asked (did not boot, died, timed out)."""


@dataclass(frozen=True)
class Camera:
    """A camera plugged into the VM's xHCI controller."""

    port: int
    serial: str
    image: Path

    @property
    def device_id(self) -> str:
        """QEMU's id of the usb-bot device (its SCSI bus is ``<device_id>.0``)."""
        return f"cam{self.port}"

    @property
    def node_name(self) -> str:
        """QEMU's block node name of the camera's disk image."""
        return f"cam{self.port}-disk"


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class VM:
    """One QEMU virtual machine booted from the appliance image.

    Use as a context manager, or call :meth:`start` and then :meth:`shutdown` or :meth:`kill`.
    Everything it writes (overlay, pool disks, QMP socket, console log) lives in ``workdir``.
    """

    def __init__(
        self,
        image: Path,
        ssh_key: Path,
        workdir: Path,
        *,
        pool_disks: int = 2,
        pool_disk_size: str = "2G",
        memory_mib: int = 3072,
        cpus: int = 2,
        accel: str | None = None,
    ) -> None:
        self.image = Path(image)
        self.ssh_key = Path(ssh_key)
        self.workdir = Path(workdir)
        self.pool_disks = pool_disks
        self.pool_disk_size = pool_disk_size
        self.memory_mib = memory_mib
        self.cpus = cpus
        # KVM here is PVM and a stock Debian kernel does not boot under it: TCG unless asked.
        self.accel = accel or os.environ.get("APPLIANCE_TEST_ACCEL", "tcg,thread=multi")
        self.ssh_port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.qmp: QMPClient | None = None
        self.cameras: dict[int, Camera] = {}
        self.boot_seconds: float | None = None
        self._stderr = None
        # One SSH connection shared by all commands (ControlMaster): under TCG every new key
        # exchange costs seconds. Kept in a short /tmp path: unix socket paths are limited.
        self._ssh_control_dir = tempfile.mkdtemp(prefix="vm-ssh-")

    # ------------------------------------------------------------------ paths

    @property
    def console_log(self) -> Path:
        """The guest's serial console (kernel and systemd messages)."""
        return self.workdir / "console.log"

    @property
    def qmp_socket(self) -> Path:
        """The QMP unix socket."""
        return self.workdir / "qmp.sock"

    @property
    def overlay(self) -> Path:
        """The throw-away qcow2 that takes the root disk's writes."""
        return self.workdir / "root-overlay.qcow2"

    def pool_disk(self, index: int) -> Path:
        """The host file of the ``index``-th ZFS pool disk (guest: virtio-pool<index>)."""
        return self.workdir / f"pool{index}.qcow2"

    # ------------------------------------------------------------------ life cycle

    def __enter__(self) -> "VM":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def start(self, wait_for_ssh: bool = True, timeout: float = 600) -> None:
        """Create the overlay and pool disks, start QEMU, connect QMP, and wait for SSH."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._create_disks()
        self.ssh_port = free_tcp_port()
        self.qmp_socket.unlink(missing_ok=True)
        started = time.monotonic()
        self._stderr = open(self.workdir / "qemu.stderr", "wb")
        self.process = subprocess.Popen(
            self.qemu_command(), stdin=subprocess.DEVNULL, stdout=self._stderr,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.qmp = QMPClient(str(self.qmp_socket))
        try:
            self.qmp.connect(wait=30)
        except OSError as exc:
            self.kill()
            raise VMError(f"QEMU did not open QMP: {self._qemu_stderr()}") from exc
        if wait_for_ssh:
            self.wait_for_ssh(timeout)
            self.boot_seconds = time.monotonic() - started

    def _create_disks(self) -> None:
        # The overlay keeps every write of the test away from the cached image.
        self.overlay.unlink(missing_ok=True)
        _run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2",
              "-b", str(self.image.resolve()), str(self.overlay)])
        for i in range(self.pool_disks):
            self.pool_disk(i).unlink(missing_ok=True)
            _run(["qemu-img", "create", "-q", "-f", "qcow2", str(self.pool_disk(i)),
                  self.pool_disk_size])

    def qemu_command(self) -> list[str]:
        """The full QEMU command line (also written to qemu.cmdline for debugging)."""
        cmd = [
            "qemu-system-x86_64",
            "-name", "appliance-test",
            "-machine", "q35",
            "-accel", self.accel,
            "-cpu", "max",
            "-smp", str(self.cpus),
            "-m", str(self.memory_mib),
            "-nodefaults", "-display", "none", "-vga", "none",
            "-chardev", f"file,id=console,path={self.console_log}",
            "-serial", "chardev:console",
            "-qmp", f"unix:{self.qmp_socket},server=on,wait=off",
            # cache=unsafe: the overlay and pool disks are thrown away after the test, and
            # skipping host flushes makes guest I/O noticeably faster under TCG.
            "-drive", f"if=none,id=root,file={self.overlay},format=qcow2,cache=unsafe",
            "-device", "virtio-blk-pci,drive=root,bootindex=0",
        ]
        for i in range(self.pool_disks):
            cmd += [
                "-drive", f"if=none,id=pool{i},file={self.pool_disk(i)},format=qcow2,cache=unsafe",
                # serial= gives the guest a stable /dev/disk/by-id/virtio-pool<i>.
                "-device", f"virtio-blk-pci,drive=pool{i},serial=pool{i}",
            ]
        cmd += [
            "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{self.ssh_port}-:22",
            "-device", "virtio-net-pci,netdev=net0",
            "-device", f"qemu-xhci,id=xhci,p2=8,p3=8,addr={XHCI_PCI_ADDR:#x}",
        ]
        (self.workdir / "qemu.cmdline").write_text(shlex.join(cmd) + "\n")
        return cmd

    def is_running(self) -> bool:
        """Whether the QEMU process is still alive."""
        return self.process is not None and self.process.poll() is None

    def wait_for_ssh(self, timeout: float = 600) -> None:
        """Wait until the guest's sshd accepts the test key; fail early if QEMU died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.is_running():
                raise VMError(f"QEMU exited during boot: {self._qemu_stderr()}\n{self.console_tail()}")
            result = self.ssh("true", check=False, timeout=20, connect_timeout=5)
            if result.returncode == 0:
                return
            time.sleep(2)
        raise VMError(f"no SSH within {timeout} s\n{self.console_tail()}")

    def shutdown(self, timeout: float = 120) -> None:
        """Power the guest off cleanly (file systems synced, pool exported by systemd).

        Falls back to the ACPI power button and then to :meth:`kill`.
        """
        if self.is_running():
            self.ssh("systemctl poweroff", check=False, timeout=20, connect_timeout=5)
            if not self._wait_exit(timeout / 2) and self.qmp is not None:
                try:
                    self.qmp.execute("system_powerdown")
                except OSError:
                    pass
                self._wait_exit(timeout / 2)
        self.kill()

    def kill(self) -> None:
        """Stop QEMU at once (a power cut for the guest) and release its files."""
        self._close_ssh_master()
        if self.qmp is not None:
            self.qmp.close()
            self.qmp = None
        if self.process is not None:
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        if getattr(self, "_stderr", None) is not None:
            self._stderr.close()
            self._stderr = None

    def _close_ssh_master(self) -> None:
        # The shared connection must not outlive the guest: a later VM may get the same port.
        if self.ssh_port and os.path.isdir(self._ssh_control_dir):
            subprocess.run(
                ["ssh", "-q", "-o", f"ControlPath={self._ssh_control_dir}/%C",
                 "-p", str(self.ssh_port), "-O", "exit", "root@127.0.0.1"],
                capture_output=True, timeout=10, check=False,
            )
        shutil.rmtree(self._ssh_control_dir, ignore_errors=True)

    def remove_disks(self) -> None:
        """Delete the overlay and the pool disks (the console log stays)."""
        for path in [self.overlay, *(self.pool_disk(i) for i in range(self.pool_disks))]:
            path.unlink(missing_ok=True)

    def _wait_exit(self, timeout: float) -> bool:
        assert self.process is not None
        try:
            self.process.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def _qemu_stderr(self) -> str:
        path = self.workdir / "qemu.stderr"
        return path.read_text(errors="replace").strip() if path.exists() else ""

    def console_tail(self, lines: int = 40) -> str:
        """The last lines of the serial console, for error messages."""
        if not self.console_log.exists():
            return "(no console output)"
        text = self.console_log.read_text(errors="replace").splitlines()
        return "--- console (last lines) ---\n" + "\n".join(text[-lines:])

    # ------------------------------------------------------------------ commands in the guest

    def ssh(
        self,
        command: str,
        *,
        check: bool = True,
        timeout: float = 300,
        input: bytes | None = None,
        connect_timeout: int = 10,
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell command in the guest as root and return its result (text).

        With ``check`` (the default) a non-zero exit raises :class:`VMError` that shows the
        command, its exit code and its output.
        """
        cmd = [
            "ssh", "-q", "-i", str(self.ssh_key), "-p", str(self.ssh_port),
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            # Host keys are made fresh on every boot of the image: nothing to pin.
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", "-o", f"ConnectTimeout={connect_timeout}",
            "-o", "ServerAliveInterval=10",
            "-o", "ControlMaster=auto", "-o", f"ControlPath={self._ssh_control_dir}/%C",
            "-o", "ControlPersist=120",
            "root@127.0.0.1", command,
        ]
        os.makedirs(self._ssh_control_dir, mode=0o700, exist_ok=True)
        try:
            # No stdin unless given: CI runs without a terminal, and ssh must never wait on one.
            result = subprocess.run(
                cmd, input=input if input is not None else b"", capture_output=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            if check:
                raise VMError(f"guest command timed out after {timeout} s: {command}") from exc
            return subprocess.CompletedProcess(cmd, 124, "", "timeout")
        done = subprocess.CompletedProcess(
            cmd, result.returncode,
            result.stdout.decode(errors="replace"), result.stderr.decode(errors="replace"),
        )
        if check and done.returncode != 0:
            raise VMError(
                f"guest command failed ({done.returncode}): {command}\n"
                f"stdout: {done.stdout.strip()}\nstderr: {done.stderr.strip()}"
            )
        return done

    def udev_block_devices(self) -> dict[str, dict[str, str]]:
        """Every block device in the guest with its udev properties, keyed by kernel name."""
        out = self.ssh(
            "for d in /sys/class/block/*; do echo \"== ${d##*/}\"; "
            "udevadm info --query=property --path=\"$d\"; done"
        ).stdout
        devices: dict[str, dict[str, str]] = {}
        current: dict[str, str] | None = None
        for line in out.splitlines():
            if line.startswith("== "):
                current = devices.setdefault(line[3:], {})
            elif current is not None and "=" in line:
                key, _, value = line.partition("=")
                current[key] = value
        return devices

    def wait_for_block_device(
        self, timeout: float = 90, **properties: str
    ) -> dict[str, dict[str, str]]:
        """Wait until block devices with the given udev properties exist; return them by name."""
        deadline = time.monotonic() + timeout
        while True:
            found = {
                name: props for name, props in self.udev_block_devices().items()
                if all(props.get(k) == v for k, v in properties.items())
            }
            if found:
                return found
            if time.monotonic() > deadline:
                raise VMError(f"no block device with {properties} after {timeout} s")
            time.sleep(1)

    def wait_for_no_block_device(self, timeout: float = 60, **properties: str) -> None:
        """Wait until no block device with the given udev properties is left."""
        deadline = time.monotonic() + timeout
        while True:
            left = [
                name for name, props in self.udev_block_devices().items()
                if all(props.get(k) == v for k, v in properties.items())
            ]
            if not left:
                return
            if time.monotonic() > deadline:
                raise VMError(f"block devices {left} with {properties} still there after {timeout} s")
            time.sleep(1)

    # ------------------------------------------------------------------ USB cameras

    def hotplug_camera(
        self,
        image_path: Path,
        port: int,
        serial: str,
        vendor: str,
        model: str,
        *,
        read_only: bool = False,
    ) -> Camera:
        """Plug a camera (a disk image) into xHCI port ``port``, as a dock slot would.

        The camera is a USB mass-storage device (``usb-bot``) whose USB serial number is
        ``serial`` (udev's ``ID_SERIAL_SHORT``), with one SCSI disk whose INQUIRY vendor and
        product are ``vendor`` (at most 8 characters) and ``model`` (at most 16): udev's
        ``ID_VENDOR`` and ``ID_MODEL``. The guest sees it appear as on real hardware.
        """
        if port not in USB_PORTS:
            raise ValueError(f"port {port} is not one of the xHCI ports {list(USB_PORTS)}")
        if port in self.cameras:
            raise ValueError(f"port {port} already holds camera {self.cameras[port].serial}")
        assert self.qmp is not None
        camera = Camera(port=port, serial=serial, image=Path(image_path))
        self.qmp.execute(
            "blockdev-add", driver="raw", **{"node-name": camera.node_name},
            file={"driver": "file", "filename": str(camera.image)}, **{"read-only": read_only},
        )
        # A hot-plugged usb-bot stays detached from the bus until its disk is added: otherwise
        # the guest would enumerate a reader with no medium and never rescan it.
        self.qmp.execute("device_add", driver="usb-bot", id=camera.device_id,
                         bus="xhci.0", port=str(port), serial=serial)
        self.qmp.execute("device_add", driver="scsi-hd", id=f"{camera.device_id}-lun0",
                         bus=f"{camera.device_id}.0", drive=camera.node_name,
                         vendor=vendor, product=model, serial=serial)
        self.qmp.execute("qom-set", path=f"/machine/peripheral/{camera.device_id}",
                         property="attached", value=True)
        self.cameras[port] = camera
        return camera

    def unplug_camera(self, port: int, timeout: float = 30) -> None:
        """Pull the camera out of port ``port`` (no warning to the guest, as when an officer
        lifts it from the dock) and release its disk image on the host."""
        assert self.qmp is not None
        camera = self.cameras.pop(port)
        self.qmp.execute("device_del", id=camera.device_id)
        self.qmp.wait_event("DEVICE_DELETED", timeout=timeout, device=camera.device_id)
        self.qmp.execute("blockdev-del", **{"node-name": camera.node_name})


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, capture_output=True)
