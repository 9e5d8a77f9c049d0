"""Mounting a camera's file system: read-only, without exec, suid or devices, and safely.

A camera file system is hostile input: it can be corrupt, truncated, of an unexpected type,
or pulled out half-way. So every step here has a timeout, every failure is a
:class:`MountError` that names the tool and quotes its stderr, and a mount is only
returned once it is really there and its root directory can be listed.

Drivers, in order of preference:

* a directory source is used as it is (the demo's last resort); nothing is mounted;
* the kernel driver (``mount -t vfat|exfat``) when the kernel knows the type;
* a FUSE driver otherwise: ``fusefat`` for FAT, ``mount.exfat-fuse`` for exFAT.

FUSE drivers do not all honour every mount flag (exfat-fuse silently drops ``noexec``,
fusefat's write support is experimental), so after a FUSE mount the per-mount flags are
forced with a bind remount: the kernel then refuses writes, exec, suid and device nodes
whatever the driver does.

Unmounting never waits on a driver that does not answer: a FUSE driver that hangs is
killed (which aborts its connection and frees everything waiting on it), a busy mount is
detached lazily, and a mount that is already gone is only logged.

Commands run through :func:`asyncio.create_subprocess_exec`, never a shell; unmounting
calls umount2(2) directly, because umount(8) stats the mount point first and that stat
alone hangs on a dead-locked FUSE driver.

Error numbers a reader sees on a FUSE mount whose driver died: ECONNABORTED on this
kernel (6.x) after the connection was aborted, ENOTCONN otherwise; both mean "camera gone".
Even ``close()`` of a file open on such a mount fails (ENOTCONN).

Quirks of the FUSE drivers of Debian 12 (fusefat 0.1a, exfat-fuse 1.3.0), seen in tests:

* fusefat shows every date one month late and writes dates one month early (FAT month
  1-12 taken as ``struct tm`` 0-11); it shows the volume label as an empty file in the
  root; it ignores the FAT lower-case flags (``log.bin`` written by mtools reads as
  ``LOG.BIN``; the kernel with ``shortname=mixed`` shows ``log.bin``); on a truncated or
  garbled boot sector it mounts anyway and shows an empty root (hence
  :func:`check_fat_boot_sector`); in ``rw+`` mode it gives new files bogus short names
  (``~1``, ``~2``: firmware that reads 8.3 names will not find them) and cannot create a
  file with a non-ASCII name (EPERM); deleting files works and leaves fsck.fat content.
* exfat-fuse run as root refuses an image file ("Block device required"), so images go
  through a loop device; it drops ``noexec``; its errors are clear ("ERROR: invalid VBR
  checksum ...", "file system in clusters is larger than device").
* A plain umount of a fuseblk (exfat-fuse) mount waits for the driver's answer, forever
  if it hangs; fuse (fusefat) mounts do not wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import dataclasses
import errno
import logging
import os
import shlex
import signal
import stat
import struct
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import DeviceGone, MountError

log = logging.getLogger(__name__)

#: Seconds allowed for one command (blkid, mount, umount, losetup, a FUSE driver starting).
COMMAND_TIMEOUT = 30.0
#: Seconds allowed for the first stat and listing of a freshly mounted root.
PROBE_TIMEOUT = 15.0
#: Seconds to wait for a mount to show up in /proc/self/mountinfo after the tool returned.
VISIBLE_TIMEOUT = 5.0
#: Seconds a FUSE driver gets to answer a stat before unmounting treats it as hung.
RESPOND_TIMEOUT = 5.0

# Kernel mount options per type, read-only and writable. errors=remount-ro makes the kernel
# stop writing to a card it finds inconsistent instead of making it worse. A camera's FAT
# times are wall-clock times without a zone: tz=UTC / time_offset=0 present them unshifted,
# and the ingest applies the station's time zone (appliance.timeutil.camera_time).
_KERNEL_OPTIONS: dict[str, dict[bool, tuple[str, ...]]] = {
    "vfat": {
        False: ("ro", "nosuid", "nodev", "noexec", "utf8=1", "shortname=mixed", "umask=0222",
                "errors=remount-ro", "tz=UTC"),
        True: ("rw", "nosuid", "nodev", "noexec", "utf8=1", "shortname=mixed", "umask=0022",
               "errors=remount-ro", "tz=UTC"),
    },
    "exfat": {
        False: ("ro", "nosuid", "nodev", "noexec", "iocharset=utf8", "umask=0222",
                "errors=remount-ro", "time_offset=0"),
        True: ("rw", "nosuid", "nodev", "noexec", "iocharset=utf8", "umask=0022",
               "errors=remount-ro", "time_offset=0"),
    },
}


@dataclass(frozen=True)
class _FuseDriver:
    """How to start one FUSE driver."""

    program: str
    ro_options: tuple[str, ...]
    rw_options: tuple[str, ...]
    needs_block_device: bool  # true: an image file is first attached to a loop device


_FUSE_DRIVERS: dict[str, _FuseDriver] = {
    # fusefat reads image files and block devices itself; "rw+" is its (experimental) write mode.
    "vfat": _FuseDriver("fusefat", ("ro", "nosuid", "nodev", "noexec"),
                        ("rw+", "nosuid", "nodev", "noexec"), needs_block_device=False),
    # exfat-fuse run as root mounts as fuseblk, which the kernel only accepts on a block device
    # ("fuse: mount failed: Block device required"), so an image goes through a loop device.
    "exfat": _FuseDriver("mount.exfat-fuse", ("ro", "nosuid", "nodev", "noexec"),
                         ("rw", "nosuid", "nodev", "noexec"), needs_block_device=True),
}

#: The file system types a camera may carry; anything else is refused before any driver sees it.
SUPPORTED_TYPES = frozenset(_KERNEL_OPTIONS) | frozenset(_FUSE_DRIVERS)

# Messages in English whatever the box's locale, and UTF-8 so file names survive.
_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"}


class SourceVanished(DeviceGone, MountError):
    """记录仪已拔出 / camera removed before it could be mounted: {}"""


@dataclass(frozen=True)
class MountedVolume:
    """A camera file system visible at ``path``."""

    path: Path  # where the files are visible
    source: Path  # the block device, image file or directory
    fs_type: str  # 'vfat', 'exfat', 'directory', ...
    driver: str  # 'kernel', 'fuse' or 'directory'
    writable: bool


# -- running commands ------------------------------------------------------------------


@dataclass(frozen=True)
class _Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def detail(self) -> str:
        """The tool's own words, for an error message: stderr, else stdout, trimmed."""
        text = (self.stderr.strip() or self.stdout.strip()).replace("\n", " | ")
        return text[:500] or f"exit status {self.returncode}"


async def _run(argv: Sequence[str], *, timeout: float | None = None) -> _Result:
    """Run a command (no shell) and collect its output; MountError if missing or too slow."""
    argv = tuple(str(a) for a in argv)
    timeout = COMMAND_TIMEOUT if timeout is None else timeout
    log.debug("run: %s", shlex.join(argv))
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=_ENV)
    except FileNotFoundError:
        raise MountError(f"{argv[0]} is not installed") from None
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except (asyncio.TimeoutError, asyncio.CancelledError) as exc:
        # Never leave a stuck tool behind: a hung mount helper holds the device.
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), 5)
        except asyncio.TimeoutError:
            # A process waiting on a FUSE request its driver already took is in an
            # uninterruptible sleep: even SIGKILL waits until the driver answers or dies.
            # The caller kills the driver; nothing here may wait for it.
            log.error("`%s` (pid %d) survives SIGKILL: stuck in the kernel on a hung "
                      "file system", shlex.join(argv), proc.pid)
        if isinstance(exc, asyncio.CancelledError):
            raise
        raise MountError(f"`{shlex.join(argv)}` did not finish within {timeout:g} s "
                         "(a corrupt file system or a hung device?)") from None
    return _Result(argv, proc.returncode if proc.returncode is not None else -1,
                   out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))


# -- what is mounted -------------------------------------------------------------------


def _unescape_mountinfo(field: bytes) -> bytes:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    out = bytearray()
    i = 0
    while i < len(field):
        if field[i] == 0x5C and i + 4 <= len(field) and field[i + 1:i + 4].isdigit():
            out.append(int(field[i + 1:i + 4], 8))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return bytes(out)


@dataclass(frozen=True)
class MountInfo:
    """One line of /proc/self/mountinfo that matters here."""

    mount_point: Path
    device: str  # major:minor
    fs_type: str  # 'vfat', 'fuse.fusefat', 'fuseblk', ...
    source: str
    options: tuple[str, ...]  # per-mount options (ro, nosuid, ...)


def mount_info(path: Path) -> MountInfo | None:
    """The topmost mount at exactly ``path``, or None when nothing is mounted there.

    Read from /proc/self/mountinfo rather than ``os.path.ismount``: a FUSE mount whose driver
    died cannot be stat'ed (ENOTCONN), so ``ismount`` says False although it is still mounted.
    """
    wanted = os.fsencode(os.path.abspath(path))
    found: MountInfo | None = None
    try:
        with open("/proc/self/mountinfo", "rb") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split(b" ")
        try:
            sep = fields.index(b"-")
        except ValueError:
            continue
        if len(fields) < sep + 3 or _unescape_mountinfo(fields[4]) != wanted:
            continue
        found = MountInfo(
            mount_point=Path(os.fsdecode(wanted)),
            device=fields[2].decode(),
            fs_type=fields[sep + 1].decode(errors="replace"),
            source=os.fsdecode(_unescape_mountinfo(fields[sep + 2])),
            options=tuple(fields[5].decode(errors="replace").split(",")),
        )
    return found


def is_mounted(path: Path) -> bool:
    """True when something (even a dead FUSE mount) is mounted at ``path``."""
    return mount_info(path) is not None


def fuse_server_pids(mount_point: Path) -> list[int]:
    """The processes serving the FUSE mount at ``mount_point``.

    A FUSE server holds /dev/fuse open and, like every FUSE driver started here (and the
    usual ``driver [options] source mountpoint`` convention), has the mount point as its
    last argument. Only the last argument counts: a stacked file system whose *source* is
    this mount point must not be mistaken for its driver. Used to kill a driver that hangs.
    """
    wanted = os.fsencode(os.path.abspath(mount_point))
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
            args = [a for a in argv if a]
            if not args or args[-1] != wanted:
                continue
            fds = os.listdir(f"/proc/{entry.name}/fd")
            if any(_readlink(f"/proc/{entry.name}/fd/{fd}") == "/dev/fuse" for fd in fds):
                pids.append(int(entry.name))
        except OSError:
            continue  # the process ended while we looked
    return pids


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


# -- detection -------------------------------------------------------------------------


async def _blkid(source: Path) -> tuple[int, dict[str, str], _Result]:
    result = await _run(["blkid", "-p", "-o", "export", str(source)])
    tags: dict[str, str] = {}
    for line in result.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            tags[key.strip()] = value.strip()
    return result.returncode, tags, result


async def detect_fs_type(source: Path) -> str | None:
    """The file system type on a block device or image file (``blkid -p``), else None.

    A directory gives ``'directory'``. Low-level probing (``-p``) reads the device itself,
    never blkid's cache, so a re-formatted card is seen as it is now.
    """
    source = Path(source)
    if source.is_dir():
        return "directory"
    code, tags, _ = await _blkid(source)
    if code != 0:
        return None
    return tags.get("TYPE") or None


async def _detect_or_explain(source: Path) -> str:
    code, tags, result = await _blkid(source)
    if code == 0 and tags.get("TYPE"):
        return tags["TYPE"]
    if tags.get("PTTYPE"):
        raise MountError(f"{source}: a partition table ({tags['PTTYPE']}) but no file system; "
                         "mount the partition, not the whole disk")
    if code == 8:
        raise MountError(f"{source}: more than one file system signature found (blkid is "
                         "ambivalent); refusing to guess")
    if code == 2:
        raise MountError(f"{source}: no recognizable file system (unformatted, encrypted or "
                         "corrupt boot sector)")
    raise MountError(f"{source}: blkid failed: {result.detail()}")


# -- FAT boot sector sanity --------------------------------------------------------------


def _device_size(source: Path) -> int:
    fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def check_fat_boot_sector(boot: bytes, device_size: int) -> str | None:
    """Why a FAT boot sector cannot be trusted, or None when it looks sane.

    fusefat trusts the boot sector blindly: on a truncated image it mounts and shows an
    empty root (the missing recordings silently vanish) and on a garbled one it seeks to
    negative offsets. So the geometry is checked here before any driver sees it.
    """
    if len(boot) < 512:
        return "the boot sector is shorter than 512 bytes"
    bps, spc, reserved, nfats, root_entries, total16 = struct.unpack_from("<HBHBHH", boot, 11)
    fatsz16 = struct.unpack_from("<H", boot, 22)[0]
    total32, fatsz32 = struct.unpack_from("<II", boot, 32)
    if bps not in (512, 1024, 2048, 4096):
        return f"bytes per sector is {bps}"
    if spc == 0 or spc & (spc - 1):
        return f"sectors per cluster is {spc}"
    if reserved == 0:
        return "no reserved sectors"
    if nfats == 0 or nfats > 4:
        return f"{nfats} FAT copies"
    total = total16 or total32
    fatsz = fatsz16 or fatsz32
    if total == 0 or fatsz == 0:
        return "the sector count or the FAT size is zero"
    root_sectors = (root_entries * 32 + bps - 1) // bps
    first_data = reserved + nfats * fatsz + root_sectors
    if first_data >= total:
        return "the FATs and root directory are larger than the whole file system"
    if total * bps > device_size:
        return (f"the file system claims {total * bps} bytes but the device holds only "
                f"{device_size} (a truncated image or a corrupt boot sector)")
    clusters = (total - first_data) // spc
    entry_bits = 12 if clusters < 4085 else 16 if clusters < 65525 else 32
    if (clusters + 2) * entry_bits > fatsz * bps * 8:
        return f"the FAT ({fatsz} sectors) is too small for {clusters} clusters"
    if entry_bits == 32:
        root_cluster = struct.unpack_from("<I", boot, 44)[0]
        if not 2 <= root_cluster < clusters + 2:
            return f"the root directory cluster {root_cluster} is outside the data area"
    return None


def _read_fat_geometry_problem(source: Path) -> str | None:
    with open(source, "rb") as fh:
        boot = fh.read(512)
    return check_fat_boot_sector(boot, _device_size(source))


# -- kernel support ----------------------------------------------------------------------


def _proc_filesystems() -> set[str]:
    try:
        with open("/proc/filesystems", encoding="ascii", errors="replace") as fh:
            return {line.split()[-1] for line in fh if line.strip()}
    except OSError:
        return set()


async def kernel_supports(fs_type: str) -> bool:
    """True when the running kernel can mount ``fs_type`` itself.

    /proc/filesystems only lists loaded drivers, so a known-but-unloaded module is loaded
    first with ``modprobe`` (what the kernel would do on mount anyway).
    """
    if fs_type in _proc_filesystems():
        return True
    with contextlib.suppress(MountError):
        await _run(["modprobe", "-q", f"fs-{fs_type}"], timeout=10)
    return fs_type in _proc_filesystems()


# -- mounting --------------------------------------------------------------------------


def _prepare_target(target: Path) -> None:
    if target.is_symlink():
        raise MountError(f"mount point {target} is a symbolic link; refusing")
    target.mkdir(parents=True, exist_ok=True)
    with os.scandir(target) as it:
        if any(True for _ in it):
            raise MountError(f"mount point {target} is not empty; refusing to hide its content")


def _remove_target(target: Path) -> None:
    """Remove the (empty) mount point directory; never anything with content in it."""
    if is_mounted(target):
        return
    try:
        target.rmdir()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("mount point %s left in place: %s", target, exc.strerror)


async def _attach_loop(image: Path, writable: bool) -> str:
    argv = ["losetup", "--find", "--show"] + ([] if writable else ["--read-only"]) + [str(image)]
    result = await _run(argv)
    if result.returncode != 0 or not result.stdout.strip().startswith("/dev/"):
        raise MountError(f"cannot attach {image} to a loop device: {result.detail()}")
    return result.stdout.strip()


async def _release_loop(device: str) -> None:
    # Detaching a busy loop device only marks it autoclear: it goes away by itself when the
    # FUSE driver that holds it open exits, so nothing has to remember it.
    result = await _run(["losetup", "--detach", device])
    if result.returncode != 0:
        log.warning("losetup --detach %s: %s", device, result.detail())


def _probe_root(target: Path) -> None:
    """Stat and list the mounted root: proves the driver answers and the fs is readable."""
    parent_dev = os.stat(target.parent).st_dev
    st = os.stat(target)
    if st.st_dev == parent_dev:
        raise MountError(f"{target} is not a separate file system after mounting")
    os.listdir(target)


async def _wait_usable(target: Path) -> None:
    """Wait until the mount shows up and its root answers; MountError otherwise."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + VISIBLE_TIMEOUT
    while not is_mounted(target):
        if loop.time() > deadline:
            raise MountError(f"the mount of {target} did not appear within {VISIBLE_TIMEOUT:g} s")
        await asyncio.sleep(0.05)
    try:
        # A thread, because a stat on a FUSE mount whose driver hangs blocks until the
        # connection is aborted; the caller aborts it on timeout, which frees the thread.
        await asyncio.wait_for(asyncio.to_thread(_probe_root, target), PROBE_TIMEOUT)
    except asyncio.TimeoutError:
        raise MountError(f"the file system driver did not answer within {PROBE_TIMEOUT:g} s "
                         "(corrupt or hostile file system?)") from None
    except OSError as exc:
        raise MountError(f"the mounted file system cannot be read: {exc.strerror or exc}") from None


async def _mount_kernel(source: Path, target: Path, fs_type: str, writable: bool) -> None:
    options = list(_KERNEL_OPTIONS[fs_type][writable])
    if source.is_file():
        options.append("loop")  # mount sets up an autoclear loop device, freed on unmount
    result = await _run(["mount", "-t", fs_type, "-o", ",".join(options), str(source), str(target)])
    if result.returncode != 0:
        raise MountError(f"mount -t {fs_type} {source} failed: {result.detail()}")


async def _mount_fuse(source: Path, target: Path, fs_type: str, writable: bool) -> None:
    driver = _FUSE_DRIVERS[fs_type]
    device = str(source)
    loop_device: str | None = None
    if driver.needs_block_device and source.is_file():
        loop_device = device = await _attach_loop(source, writable)
    try:
        options = driver.rw_options if writable else driver.ro_options
        # Both drivers daemonize after the mount succeeded, so their exit status says
        # whether the mount is there; their stderr says why not.
        result = await _run([driver.program, "-o", ",".join(options), device, str(target)])
        if result.stdout.strip():
            log.debug("%s said: %s", driver.program, result.stdout.strip())
        if result.returncode != 0:
            raise MountError(f"{driver.program} could not mount {source} ({fs_type}): "
                             f"{result.detail()}")
    finally:
        if loop_device:
            await _release_loop(loop_device)


async def _restrict_flags(target: Path, writable: bool) -> None:
    """Force ro (unless writable), nosuid, nodev, noexec on the mount, whatever its driver did.

    exfat-fuse drops noexec; fusefat's "rw+" write code is experimental, so read-only must
    be the kernel's doing, not the driver's. A bind remount changes only the per-mount flags.
    """
    flags = "rw" if writable else "ro"
    result = await _run(["mount", "-o", f"remount,bind,{flags},nosuid,nodev,noexec", str(target)])
    if result.returncode != 0:
        raise MountError(f"cannot restrict the mount flags of {target}: {result.detail()}")


async def _check_source(source: Path, fs_type: str) -> None:
    if fs_type == "vfat":
        try:
            problem = await asyncio.wait_for(asyncio.to_thread(_read_fat_geometry_problem, source),
                                             COMMAND_TIMEOUT)
        except asyncio.TimeoutError:
            raise MountError(f"{source}: reading the boot sector timed out (a hung device?)") from None
        except OSError as exc:
            raise MountError(f"{source}: cannot read the boot sector: {exc.strerror or exc}") from None
        if problem:
            raise MountError(f"{source}: corrupt FAT file system: {problem}")


async def mount_volume(source: Path, target: Path, *, writable: bool = False,
                       fs_type: str | None = None) -> MountedVolume:
    """Mount ``source`` at ``target`` (read-only unless ``writable``) and return the volume.

    A directory source is returned as it is. A block device or image file is probed,
    checked, mounted with the kernel driver when there is one and FUSE otherwise, and only
    returned once its root can be listed. ``target`` is created if needed and must be empty;
    a stale mount left at ``target`` (a crash of an earlier run) is detached first.
    Raises :class:`MountError` with the reason, :class:`SourceVanished` if ``source`` is gone.
    """
    source = Path(os.path.abspath(source))
    target = Path(os.path.abspath(target))
    try:
        st = os.stat(source)
    except FileNotFoundError:
        raise SourceVanished(f"{source} does not exist (camera removed?)") from None
    except OSError as exc:
        raise MountError(f"{source}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        return MountedVolume(source, source, "directory", "directory", writable)
    if not (stat.S_ISBLK(st.st_mode) or stat.S_ISREG(st.st_mode)):
        raise MountError(f"{source} is neither a block device, an image file nor a directory")

    fs_type = fs_type or await _detect_or_explain(source)
    if fs_type not in SUPPORTED_TYPES:
        raise MountError(f"{source}: file system type {fs_type!r} is not supported on a camera "
                         f"(supported: {', '.join(sorted(SUPPORTED_TYPES))})")
    await _check_source(source, fs_type)

    stale = mount_info(target)
    if stale is not None:
        log.warning("a stale mount (%s) was left at %s; detaching it", stale.fs_type, target)
        await _detach(target, driver=_driver_of(stale))
    _prepare_target(target)

    use_kernel = fs_type in _KERNEL_OPTIONS and await kernel_supports(fs_type)
    if not use_kernel and fs_type not in _FUSE_DRIVERS:
        _remove_target(target)
        raise MountError(f"no driver for {fs_type}: not in this kernel and no FUSE driver known")
    driver = "kernel" if use_kernel else "fuse"
    try:
        if use_kernel:
            await _mount_kernel(source, target, fs_type, writable)
        else:
            await _mount_fuse(source, target, fs_type, writable)
        # Probe before anything else touches the mount: a driver that hangs is found within
        # PROBE_TIMEOUT instead of stalling a mount helper for COMMAND_TIMEOUT.
        await _wait_usable(target)
        if not use_kernel:
            await _restrict_flags(target, writable)
    except BaseException:
        # Whatever went wrong (including cancellation), nothing stays mounted or running.
        try:
            await asyncio.shield(_detach(target, driver=driver, force=True))
        except Exception:  # the original error is the one that matters; this one is logged
            log.exception("cleaning up the failed mount at %s", target)
        _remove_target(target)
        raise
    log.info("mounted %s (%s, %s, %s) at %s", source, fs_type, driver,
             "read-write" if writable else "read-only", target)
    return MountedVolume(target, source, fs_type, driver, writable)


def _driver_of(info: MountInfo) -> str:
    return "fuse" if info.fs_type == "fuseblk" or info.fs_type.startswith("fuse.") else "kernel"


def _process_alive(pid: int) -> bool:
    # Daemonized drivers are not our children: once dead they may linger as zombies of an
    # init that does not reap, so "alive" means present and not a zombie.
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


async def _wait_exited(pids: list[int], timeout: float = 5.0) -> None:
    """Give FUSE drivers a moment to flush and exit after their unmount."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while any(_process_alive(p) for p in pids):
        if loop.time() > deadline:
            log.warning("FUSE driver(s) %s still running %g s after unmount", pids, timeout)
            return
        await asyncio.sleep(0.05)


async def _kill_fuse_servers(target: Path) -> None:
    # Killing the driver aborts its FUSE connection: every request it holds fails with
    # ENOTCONN, which frees whatever waits on it (even in uninterruptible sleep).
    pids = await asyncio.to_thread(fuse_server_pids, target)
    for pid in pids:
        log.warning("killing FUSE driver %d of %s", pid, target)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def _responds(target: Path, timeout: float) -> bool:
    """True when a stat of the mounted root is answered within ``timeout`` seconds."""
    try:
        await asyncio.wait_for(asyncio.to_thread(os.stat, target), timeout)
    except asyncio.TimeoutError:
        return False
    except OSError:
        return True  # an answer, even an error (ENOTCONN of a dead mount), is not a hang
    return True


_MNT_FORCE, _MNT_DETACH, _UMOUNT_NOFOLLOW = 1, 2, 8
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _umount2(target: Path, flags: int) -> int:
    """umount2(2) straight from libc: 0 or the errno.

    Not umount(8): libmount stats the mount point first, and that stat alone hangs on a
    FUSE mount whose driver does not answer.
    """
    if _libc.umount2(os.fsencode(target), flags | _UMOUNT_NOFOLLOW) == 0:
        return 0
    return ctypes.get_errno()


async def _detach(target: Path, *, driver: str, force: bool = False) -> str:
    """Unmount ``target``: plainly, lazily if busy; a hung FUSE driver is killed first.

    Returns how it went: ``"gone"`` (nothing was mounted), ``"plain"`` or ``"lazy"``.
    """
    if not is_mounted(target):
        return "gone"
    if driver == "fuse" and (force or not await _responds(target, RESPOND_TIMEOUT)):
        # A plain unmount of a hung fuseblk mount would wait for the driver forever.
        await _kill_fuse_servers(target)
    try:
        err = await asyncio.wait_for(asyncio.to_thread(_umount2, target, 0), COMMAND_TIMEOUT)
    except asyncio.TimeoutError:
        log.warning("umount %s did not return within %g s", target, COMMAND_TIMEOUT)
        if driver == "fuse":
            await _kill_fuse_servers(target)  # frees the stuck umount thread too
        err = errno.ETIMEDOUT
    if err == 0:
        return "plain"
    if err == errno.EINVAL and not is_mounted(target):
        return "gone"  # unmounted meanwhile (by hand, or the system after a removal)
    log.warning("umount %s: %s; detaching lazily", target, os.strerror(err))
    err = await asyncio.to_thread(_umount2, target, _MNT_DETACH)
    if err and is_mounted(target):
        raise MountError(f"cannot unmount {target}: {os.strerror(err)}")
    return "lazy"


async def unmount_volume(vol: MountedVolume) -> None:
    """Unmount a volume and remove its mount point; a lazy unmount if it is busy.

    A mount that is already gone (camera pulled, driver killed, unmounted by hand) is only
    logged. A directory volume is left alone. Raises :class:`MountError` only when even a
    lazy unmount fails.
    """
    if vol.driver == "directory":
        return
    if not is_mounted(vol.path):
        log.info("%s was already unmounted", vol.path)
        _remove_target(vol.path)
        return
    pids: list[int] = []
    if vol.driver == "fuse":
        pids = await asyncio.to_thread(fuse_server_pids, vol.path)
        if not pids:
            log.warning("the FUSE driver of %s is gone; removing the dead mount", vol.path)
    how = await _detach(vol.path, driver=vol.driver)
    if how == "plain":
        # A FUSE driver flushes and exits after a plain unmount; wait so that a remount
        # never races the old driver. After a lazy detach it serves open files until they
        # are closed, so there is nothing to wait for.
        await _wait_exited(pids)
    _remove_target(vol.path)
    log.info("unmounted %s (%s)", vol.path, how)


async def remount(vol: MountedVolume, *, writable: bool) -> MountedVolume:
    """The same volume switched to read-write or back to read-only.

    The kernel driver remounts in place; a FUSE driver cannot change its mode, so it is
    unmounted and mounted again (the path stays the same), as is a kernel mount of an
    image file going read-write (its loop device is read-only).
    """
    if vol.writable == writable:
        return vol
    if vol.driver == "directory":
        return dataclasses.replace(vol, writable=writable)
    if vol.driver == "kernel" and not (writable and vol.source.is_file()):
        # (An image mounted read-only sits on a read-only loop device, which cannot be
        # remounted read-write: that case is unmounted and mounted again below.)
        mode = "rw" if writable else "ro"
        result = await _run(["mount", "-o", f"remount,{mode},nosuid,nodev,noexec", str(vol.path)])
        if result.returncode != 0:
            raise MountError(f"cannot remount {vol.path} {mode}: {result.detail()}")
        return dataclasses.replace(vol, writable=writable)
    await unmount_volume(vol)
    return await mount_volume(vol.source, vol.path, writable=writable, fs_type=vol.fs_type)


@contextlib.asynccontextmanager
async def mounted(source: Path, target: Path, *, writable: bool = False,
                  fs_type: str | None = None) -> AsyncIterator[MountedVolume]:
    """``async with mounted(dev, mnt) as vol:`` — unmounted again on the way out, always."""
    vol = await mount_volume(source, target, writable=writable, fs_type=fs_type)
    try:
        yield vol
    finally:
        await asyncio.shield(unmount_volume(vol))


async def unmount_all_under(root: Path) -> list[Path]:
    """Detach every mount below ``root`` (stale slot mounts after a crash); returns them."""
    prefix = os.fsencode(os.path.abspath(root)) + b"/"
    found = []
    with open("/proc/self/mountinfo", "rb") as fh:
        for line in fh.read().splitlines():
            fields = line.split(b" ")
            if len(fields) > 4:
                point = _unescape_mountinfo(fields[4])
                if point.startswith(prefix):
                    found.append(Path(os.fsdecode(point)))
    # Deepest first, so a nested mount never keeps its parent busy.
    for point in sorted(set(found), key=lambda p: len(p.parts), reverse=True):
        info = mount_info(point)
        driver = _driver_of(info) if info else "kernel"
        try:
            await _detach(point, driver=driver)
        except MountError as exc:
            log.error("stale mount %s: %s", point, exc)
        _remove_target(point)
    return sorted(set(found))


__all__ = [
    "MountInfo", "MountedVolume", "SUPPORTED_TYPES", "SourceVanished", "check_fat_boot_sector",
    "detect_fs_type", "fuse_server_pids", "is_mounted", "kernel_supports", "mount_info",
    "mount_volume", "mounted", "remount", "unmount_all_under", "unmount_volume",
]
