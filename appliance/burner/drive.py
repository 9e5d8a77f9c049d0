"""Optical drives through xorriso: check the blank, burn, read back, verify, eject.

A drive is what the configuration names: a real burner (``/dev/sr0``) or a pseudo-drive
``stdio:/path/file`` that xorriso writes like a disc (the tests, and trials without a
burner). Every xorriso call is an argument list run with
:func:`asyncio.create_subprocess_exec` (never a shell) with ``-pkt_output on``, so each
output line is tagged and the progress lines can be parsed.

* :func:`probe` / :func:`check_ready`: what disc is in the drive; refuse one that is not
  blank, not recordable or too small, with a clear error;
* :func:`burn`: an async iterator of :class:`~appliance.burner.model.BurnProgress`
  while ``xorriso -as cdrecord`` writes an image; a failure (full or read-only target, a
  drive that gives up) raises :class:`BurnFailed` with xorriso's own reason;
* :func:`read_back`: reads the disc back in full and compares its SHA-256 with the
  image's; a mismatch raises :class:`VerifyFailed` (the disc is to be rejected);
* :func:`verify_disc`: checks every file of any disc (or image) against the disc's own
  ``MANIFEST.json``, reading it with xorriso (not pycdlib);
* :func:`burn_and_verify`: the three steps a burn job runs, then eject.

Several drives can burn several discs of a set at once: nothing here is shared between
calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import shlex
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from appliance.burner.errors import (BurnFailed, DriveError, MediumTooSmall, NoMedia, NotBlank,
                                     VerifyFailed, WrongMedia)
from appliance.burner.layout import MANIFEST, SHA256SUMS
from appliance.burner.media import SECTOR, Medium, from_drive_profile, human_bytes
from appliance.burner.model import BurnProgress, DiscVerifyReport, DriveStatus, FileCheck

log = logging.getLogger(__name__)

XORRISO = "xorriso"
#: ``xorriso -as cdrecord`` pads a track with 300 KiB unless told otherwise.
PAD_SECTORS = 150
READ_BLOCK = 1 << 20
#: Seconds without a line from xorriso after which a burn is declared stuck.
STALL_TIMEOUT = 900.0

_PKT = re.compile(r"^[RIM]:[01]: ?")
_WRITTEN = re.compile(r"(\d+)\s+of\s+(\d+)\s+MB written.*?(?:\s(\d+(?:\.\d+)?x))?\.?\s*$")
_SEVERE = re.compile(r"\b(FAILURE|SORRY|FATAL|ABORT)\b")


@dataclass(frozen=True)
class Drive:
    """A drive address as xorriso takes it, and the file or device it reads from."""

    address: str
    path: Path
    pseudo: bool

    @classmethod
    def parse(cls, spec: str | Path) -> "Drive":
        """``/dev/sr0``, ``stdio:/abs/path`` or (for images) a plain path to a file."""
        text = str(spec)
        if text.startswith("stdio:"):
            path = Path(text[len("stdio:"):])
            if not path.is_absolute():
                raise DriveError(f"{text}: a pseudo-drive needs an absolute path (stdio:/...)")
            return cls(text, path, True)
        path = Path(text)
        if not path.is_absolute():
            raise DriveError(f"{text}: give a device such as /dev/sr0 or stdio:/path/file")
        if text.startswith("/dev/"):
            return cls(text, path, False)
        return cls(f"stdio:{text}", path, True)

    def __str__(self) -> str:
        return self.address


def _as_drive(drive: str | Path | Drive) -> Drive:
    return drive if isinstance(drive, Drive) else Drive.parse(drive)


# --- running xorriso -------------------------------------------------------------------

@dataclass
class _Run:
    argv: list[str]
    returncode: int
    lines: list[str]

    def errors(self) -> list[str]:
        return [line for line in self.lines if _SEVERE.search(line)]

    def reason(self) -> str:
        """The most telling error line: libburn's own (it says why) before xorriso's."""
        errs = self.errors()
        for line in errs:
            if "libburn" in line or "libisofs" in line:
                return _strip_tag(line)
        for line in errs:
            if "Job could not be performed" not in line and "aborting" not in line:
                return _strip_tag(line)
        return _strip_tag(errs[0]) if errs else f"xorriso exited with {self.returncode}"


def _strip_tag(line: str) -> str:
    line = _PKT.sub("", line).strip()
    return re.sub(r"^(xorriso|libburn|libisofs)\s*:\s*", r"\1: ", line)


def _cmdline(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


async def _xorriso(args: Sequence[str], *, xorriso: str = XORRISO,
                   on_line: Callable[[str], None] | None = None,
                   stall_timeout: float | None = None,
                   pass_fds: Sequence[int] = ()) -> _Run:
    """Run xorriso with ``-pkt_output on``; every stdout line goes to ``on_line``."""
    argv = [xorriso, "-pkt_output", "on", *args]
    log.debug("running %s", _cmdline(argv))
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, pass_fds=tuple(pass_fds))
    except FileNotFoundError:
        raise DriveError(f"{xorriso} is not installed (Debian package xorriso)") from None
    lines: list[str] = []
    stderr_task = asyncio.create_task(proc.stderr.read())  # type: ignore[union-attr]
    try:
        assert proc.stdout is not None
        while True:
            try:
                raw = await asyncio.wait_for(proc.stdout.readline(), stall_timeout)
            except asyncio.TimeoutError:
                raise BurnFailed(f"xorriso printed nothing for {stall_timeout:.0f}s; "
                                 f"the drive stopped responding ({_cmdline(argv)})") from None
            if not raw:
                break
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            lines.append(line)
            if on_line is not None:
                on_line(line)
        await proc.wait()
        err = await stderr_task
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if not stderr_task.done():
            stderr_task.cancel()
    lines.extend(f"I:1: {x}" for x in err.decode("utf-8", "replace").splitlines()
                 if _SEVERE.search(x))
    return _Run(argv, proc.returncode if proc.returncode is not None else -1, lines)


# --- what is in the drive --------------------------------------------------------------

def _field(lines: Sequence[str], name: str) -> str | None:
    for line in lines:
        text = _PKT.sub("", line)
        if text.startswith(name):
            return text.split(":", 1)[1].strip()
    return None


async def probe(drive: str | Path | Drive, *, xorriso: str = XORRISO) -> DriveStatus:
    """Ask the drive what it holds (``xorriso -outdev D -tell_media_space -toc``)."""
    d = _as_drive(drive)
    if d.pseudo and not d.path.parent.is_dir():
        raise DriveError(f"{d}: folder {d.path.parent} does not exist")
    run = await _xorriso(["-abort_on", "NEVER", "-outdev", d.address, "-tell_media_space", "-toc"],
                         xorriso=xorriso)
    media = _field(run.lines, "Media current") or ""
    status = _field(run.lines, "Media status") or ""
    if not media:
        raise NoMedia(f"{d}: {run.reason()}")
    space = _field(run.lines, "Media space")
    free = int(space.rstrip("s")) if space and space.rstrip("s").isdigit() else None
    vendor = product = ""
    dtype = _field(run.lines, "Drive type")
    if dtype:
        m = re.search(r"vendor '([^']*)' product '([^']*)'", dtype)
        if m:
            vendor, product = m.group(1).strip(), m.group(2).strip()
    medium = None if d.pseudo else from_drive_profile(media, free)
    return DriveStatus(drive=d.address, pseudo=d.pseudo, media=media, status=status,
                       blank="is blank" in status, free_sectors=free, medium=medium,
                       vendor=vendor, product=product)


async def check_ready(drive: str | Path | Drive, image_size: int, *,
                      medium: Medium | None = None, xorriso: str = XORRISO) -> DriveStatus:
    """The drive holds a blank, recordable disc with room for ``image_size`` bytes, or a
    clear error: :class:`NoMedia`, :class:`WrongMedia`, :class:`NotBlank`,
    :class:`MediumTooSmall`. ``medium`` is what the plan expects (used in messages)."""
    st = await probe(drive, xorriso=xorriso)
    planned = f" (the plan is for {medium.name})" if medium else ""
    if "not present" in st.media or st.media.startswith("is not"):
        raise NoMedia(f"{st.drive}: insert a blank disc{planned}")
    if not st.pseudo and st.medium is None:
        raise WrongMedia(f"{st.drive} holds {st.media!r}, not a recordable CD-R, DVD±R or BD-R{planned}")
    if not st.blank:
        raise NotBlank(f"{st.drive} holds a disc that {st.status.strip() or 'is written'}; "
                       f"insert a blank{planned}")
    needed = -(-image_size // SECTOR) + PAD_SECTORS
    if st.free_sectors is not None and st.free_sectors < needed:
        raise MediumTooSmall(
            f"{st.drive} has room for {human_bytes(st.free_sectors * SECTOR)}, the image needs "
            f"{human_bytes(needed * SECTOR)}{planned}")
    return st


# --- burning ---------------------------------------------------------------------------

def parse_progress(line: str, drive: str, size: int) -> BurnProgress | None:
    """A progress event from one line of ``xorriso -pkt_output on -as cdrecord``, e.g.
    ``I:1: xorriso : UPDATE :  158 of  200 MB written (fifo 99%) [buf  50%]  49.8x.``
    (xorriso's MB are MiB), or ``None`` for any other line."""
    text = _PKT.sub("", line).strip()
    m = _WRITTEN.search(text)
    if m:
        done = min(size, int(m.group(1)) << 20)
        return BurnProgress(drive, "writing", done, size, m.group(3), text)
    if "Closing track" in text or "Closing session" in text or "Fixating" in text:
        return BurnProgress(drive, "closing", size, size, None, text)
    return None


async def burn(
    drive: str | Path | Drive,
    image: Path,
    *,
    check: bool = True,
    medium: Medium | None = None,
    speed: str | None = None,
    xorriso: str = XORRISO,
    stall_timeout: float = STALL_TIMEOUT,
) -> AsyncIterator[BurnProgress]:
    """Burn ``image`` onto the disc in ``drive``, yielding progress.

    With ``check`` the disc is first checked (:func:`check_ready`). The last event has
    phase ``written``; any failure raises :class:`BurnFailed` (or the check's error).
    Closing the iterator early stops xorriso (which ruins a real disc).
    """
    d = _as_drive(drive)
    image = Path(image)
    try:
        size = image.stat().st_size
    except OSError as exc:
        raise DriveError(f"image {image}: {exc.strerror or exc}") from exc
    yield BurnProgress(d.address, "checking", 0, size)
    if check:
        await check_ready(d, size, medium=medium, xorriso=xorriso)
    yield BurnProgress(d.address, "ready", 0, size)

    queue: asyncio.Queue[BurnProgress | None] = asyncio.Queue()
    written_ok = False

    def on_line(line: str) -> None:
        nonlocal written_ok
        event = parse_progress(line, d.address, size)
        if event is not None:
            queue.put_nowait(event)
        elif "completed successfully" in line:
            written_ok = True

    args = ["-abort_on", "FAILURE", "-as", "cdrecord", "-v", f"dev={d.address}"]
    if speed:
        args.append(f"speed={speed}")
    args.append(str(image))
    task = asyncio.create_task(_xorriso(args, xorriso=xorriso, on_line=on_line,
                                        stall_timeout=stall_timeout))
    task.add_done_callback(lambda _t: queue.put_nowait(None))
    try:
        while True:
            event = await queue.get()
            if event is None:
                break
            yield event
        run = await task
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    if run.returncode != 0 or run.errors() or not written_ok:
        raise BurnFailed(f"{d}: {run.reason()}")
    yield BurnProgress(d.address, "written", size, size)


# --- reading back ----------------------------------------------------------------------

async def read_back(
    drive: str | Path | Drive,
    *,
    size: int,
    sha256: str,
    interval: float = 0.5,
) -> AsyncIterator[BurnProgress]:
    """Read the first ``size`` bytes of the disc and compare their SHA-256 with the
    image's. Yields ``verifying`` events, then ``verified``; a mismatch or a short disc
    raises :class:`VerifyFailed`."""
    d = _as_drive(drive)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[BurnProgress | BaseException | str] = asyncio.Queue()
    stop = threading.Event()

    def post(item) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, item)

    def work() -> None:
        try:
            post(_hash_prefix(d, size, stop, lambda done: post(
                BurnProgress(d.address, "verifying", done, size)), interval))
        except BaseException as exc:  # handed to the event loop, raised there
            post(exc)

    thread = threading.Thread(target=work, name=f"readback {d.address}", daemon=True)
    thread.start()
    try:
        while True:
            item = await queue.get()
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, str):
                actual = item
                break
            yield item
    finally:
        stop.set()
    if actual != sha256.lower():
        raise VerifyFailed(f"{d}: the disc reads back with SHA-256 {actual}, the image has {sha256.lower()}")
    yield BurnProgress(d.address, "verified", size, size, message=actual)


def _hash_prefix(d: Drive, size: int, stop: threading.Event,
                 report: Callable[[int], None], interval: float) -> str:
    h = hashlib.sha256()
    done = 0
    last = time.monotonic()
    try:
        fd = os.open(d.path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise VerifyFailed(f"{d}: cannot open for reading: {exc.strerror or exc}") from exc
    try:
        while done < size:
            if stop.is_set():
                raise VerifyFailed(f"{d}: read-back cancelled")
            try:
                block = os.read(fd, min(READ_BLOCK, size - done))
            except OSError as exc:
                raise VerifyFailed(f"{d}: read error at byte {done}: {exc.strerror or exc}") from exc
            if not block:
                raise VerifyFailed(f"{d}: the disc ends after {done} bytes, the image has {size}")
            h.update(block)
            done += len(block)
            now = time.monotonic()
            if now - last >= interval:
                report(done)
                last = now
    finally:
        os.close(fd)
    return h.hexdigest()


async def eject(drive: str | Path | Drive, *, xorriso: str = XORRISO) -> None:
    """Open the tray of a real drive; nothing for a pseudo-drive."""
    d = _as_drive(drive)
    if d.pseudo:
        return
    run = await _xorriso(["-abort_on", "FAILURE", "-outdev", d.address, "-eject", "all"], xorriso=xorriso)
    if run.returncode != 0:
        raise DriveError(f"{d}: cannot eject: {run.reason()}")


async def burn_and_verify(
    drive: str | Path | Drive,
    image: Path,
    *,
    sha256: str,
    medium: Medium | None = None,
    speed: str | None = None,
    eject_after: bool = True,
    xorriso: str = XORRISO,
) -> AsyncIterator[BurnProgress]:
    """Check the blank, burn, read back and compare, eject: what one disc of a burn job
    goes through. A :class:`VerifyFailed` means: mark the disc bad, ask for a new blank."""
    image = Path(image)
    size = image.stat().st_size
    async for event in burn(drive, image, medium=medium, speed=speed, xorriso=xorriso):
        yield event
    async for event in read_back(drive, size=size, sha256=sha256):
        yield event
    if eject_after:
        await eject(drive, xorriso=xorriso)
        yield BurnProgress(_as_drive(drive).address, "ejected", size, size)


# --- checking a disc against its own manifest ------------------------------------------

async def _concat(d: Drive, paths: Sequence[str], sizes: Sequence[int] | None, *,
                  xorriso: str) -> tuple[list[bytes] | list[tuple[str, int]], _Run]:
    """Stream files of the disc through one xorriso ``-concat`` into a pipe.

    With ``sizes`` the stream is cut into files and hashed (returns ``(sha256, bytes)``
    per file, in a worker thread); without, the files' contents are returned."""
    r, w = os.pipe()
    args = ["-abort_on", "FAILURE", "-iso_rr_pattern", "off", "-osirrox", "on",
            "-indev", d.address]
    for p in paths:
        args += ["-concat", "append", f"/dev/fd/{w}", "/" + p.lstrip("/"), "--"]

    def consume():
        with os.fdopen(r, "rb", buffering=0) as f:
            if sizes is None:
                return [f.read()]
            out = []
            for size in sizes:
                h = hashlib.sha256()
                left = size
                got = 0
                while left:
                    block = f.read(min(READ_BLOCK, left))
                    if not block:
                        break
                    h.update(block)
                    left -= len(block)
                    got += len(block)
                out.append((h.hexdigest(), got))
            f.read()  # drain whatever is left so xorriso never blocks
            return out

    reader = asyncio.create_task(asyncio.to_thread(consume))
    try:
        run = await _xorriso(args, xorriso=xorriso, pass_fds=(w,))
    finally:
        os.close(w)
    data = await reader
    return data, run


async def _file_sizes(d: Drive, *, xorriso: str) -> dict[str, int]:
    """Path (without the leading /) -> size of every data file on the disc."""
    run = await _xorriso(["-abort_on", "FAILURE", "-indev", d.address, "-find", "/", "-type", "f",
                          "-exec", "report_lba", "--"], xorriso=xorriso)
    if run.returncode != 0:
        raise DriveError(f"{d}: cannot list the disc: {run.reason()}")
    sizes: dict[str, int] = {}
    for line in run.lines:
        text = _PKT.sub("", line)
        if not text.startswith("File data lba:"):
            continue
        fields = text.split(":", 1)[1].split(",", 4)
        if len(fields) != 5:
            continue
        path = shlex.split(fields[4].strip())[0]
        sizes[path.lstrip("/")] = int(fields[3].strip())
    return sizes


def _sha256sums_line(data: bytes, path: str) -> str | None:
    for line in data.decode("utf-8", "replace").splitlines():
        if "  " in line and line.split("  ", 1)[1] == path:
            return line.split("  ", 1)[0].lower()
    return None


async def verify_disc(source: str | Path | Drive, *, xorriso: str = XORRISO) -> DiscVerifyReport:
    """Check every file of a disc (or image file) against the disc's own MANIFEST.json.

    Reads with xorriso (ISO 9660 + Rock Ridge), not with the library that wrote it.
    Every recording and every file the manifest lists is hashed; files on the disc that
    the manifest does not list, and SHA256SUMS lines that disagree with it, are reported.
    """
    d = _as_drive(source)
    sizes = await _file_sizes(d, xorriso=xorriso)
    if MANIFEST not in sizes:
        raise DriveError(f"{d}: no {MANIFEST} on this disc; it was not made by this appliance")
    (raw,), run = await _concat(d, [MANIFEST], None, xorriso=xorriso)
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DriveError(f"{d}: {MANIFEST} is damaged: {exc}") from exc

    expected: dict[str, tuple[int, str]] = {}
    for rec in manifest.get("recordings", []):
        expected[rec["path"]] = (int(rec["size"]), rec["sha256"].lower())
    for f in manifest.get("files", []):
        expected[f["path"]] = (int(f["size"]), f["sha256"].lower())

    problems: list[str] = []
    sums_raw = b""
    if SHA256SUMS in sizes:
        (sums_raw,), _ = await _concat(d, [SHA256SUMS], None, xorriso=xorriso)
        listed = {}
        for line in sums_raw.decode("utf-8", "replace").splitlines():
            if "  " in line:
                digest, path = line.split("  ", 1)
                listed[path] = digest.lower()
        for path, (_, digest) in expected.items():
            if listed.get(path) != digest:
                problems.append(f"{SHA256SUMS} disagrees with {MANIFEST} on {path}")
    else:
        problems.append(f"no {SHA256SUMS} on the disc")

    if listed_manifest := (_sha256sums_line(sums_raw, MANIFEST) if SHA256SUMS in sizes else None):
        if listed_manifest != hashlib.sha256(raw).hexdigest():
            problems.append(f"{MANIFEST} does not match its line in {SHA256SUMS}")

    present = [p for p in expected if sizes.get(p) == expected[p][0]]
    checks: list[FileCheck] = []
    results: dict[str, tuple[str, int]] = {}
    if present:
        hashed, run = await _concat(d, present, [expected[p][0] for p in present], xorriso=xorriso)
        if run.returncode != 0:
            problems.append(f"reading the files failed: {run.reason()}")
        results = dict(zip(present, hashed))  # type: ignore[arg-type]
    for path, (size, digest) in expected.items():
        actual = results.get(path)
        checks.append(FileCheck(
            path=path, expected_sha256=digest,
            actual_sha256=actual[0] if actual and actual[1] == size else None,
            expected_size=size, actual_size=sizes.get(path)))
    own = {MANIFEST, SHA256SUMS}
    unexpected = sorted(p for p in sizes if p not in expected and p not in own)
    disc = manifest.get("disc", {})
    return DiscVerifyReport(
        source=d.address, label=str(disc.get("label", "")), set_id=str(disc.get("set_id", "")),
        audit_chain_head=manifest.get("audit_chain_head"), checked=tuple(checks),
        unexpected=tuple(unexpected), problems=tuple(problems))
