"""Build one disc's image: ISO 9660 level 3 + Joliet + Rock Ridge + UDF 2.60 (pycdlib).

The recordings are streamed from the vault into the image (never loaded into memory),
each checked against its catalogued SHA-256 on the way; the image's own SHA-256 is
computed while it is written. What goes on the disc:

* the recordings, under their ``disc_path``;
* ``MANIFEST.json`` (with the audit chain's head hash given by the caller),
  ``SHA256SUMS``, ``record-form.pdf`` and ``record-form.html``, ``index.html``,
  ``README.txt`` (see :mod:`appliance.burner.content` and :mod:`appliance.burner.form`).

Before anything is written, every path is checked and every vault file must exist with
its catalogued size (and, with ``prehash=True``, its catalogued SHA-256). During the
write each file's SHA-256 is compared as its last block passes: a file that changed
stops the build, the partial image is deleted, and nothing is published. The image is
written to a hidden ``.part`` file next to ``out_path`` and only linked to its final
name once complete, fsynced and verified, so a crash never leaves a half image that
looks finished, and an existing image is never overwritten.

:func:`build_image` blocks (file I/O and hashing); from the event loop call
:func:`build_image_async`, which runs it in a thread.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import io
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pycdlib

from appliance.burner import content, form
from appliance.burner.errors import BuildCancelled, ImageError, SourceMismatch
from appliance.burner.layout import (FORM_HTML, FORM_PDF, INDEX, MANIFEST, README, SHA256SUMS,
                                     DiscLayout, Placement)
from appliance.burner.media import SECTOR, human_bytes
from appliance.burner.model import ImageResult, PlannedDisc, RecordSession
from appliance.burner.streams import HashingSink, SourceReader

log = logging.getLogger(__name__)

BLOCK_SIZE = 4 << 20
FILE_MODE = 0o100444
DIR_MODE = 0o040555
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

ProgressFn = Callable[[int, int], None]


@dataclass
class _File:
    placement: Placement
    size: int
    fp: io.RawIOBase | io.BytesIO


def build_image(
    disc: PlannedDisc,
    out_path: Path,
    *,
    sessions: Mapping[str, RecordSession] | None = None,
    station_name: str = "",
    audit_chain_head: str | None = None,
    created_at: datetime | None = None,
    tz: str = "Asia/Shanghai",
    prehash: bool = False,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    block_size: int = BLOCK_SIZE,
    font: tuple[str, int, int] | None = None,
) -> ImageResult:
    """Write the image of ``disc`` to ``out_path`` and return its size and SHA-256.

    ``sessions`` gives the record form's facts per session id (missing ones are printed
    blank). ``progress(done, total)`` is called from this thread as bytes are written;
    setting ``cancel`` stops the build (:class:`BuildCancelled`). Raises
    :class:`SourceMismatch` when a vault file is missing, has another size or another
    SHA-256 than catalogued, :class:`~appliance.burner.errors.InvalidDiscPath` for a path
    no disc can hold, and :class:`ImageError` for anything else (disk full, image larger
    than the medium, ``out_path`` exists).
    """
    started = time.monotonic()
    sessions = sessions or {}
    created_at = created_at or datetime.now(timezone.utc)
    out_path = Path(out_path)
    if out_path.exists():
        raise ImageError(f"{out_path} already exists; an image is never overwritten")
    if not out_path.parent.is_dir():
        raise ImageError(f"{out_path.parent} is not a folder")

    # 1. Where everything goes; refuse bad paths before touching anything.
    layout = DiscLayout()
    placements = [layout.add(r.disc_path, owner=f"recording {r.recording_id}") for r in disc.recordings]
    _check_sources(disc, prehash=prehash, cancel=cancel)

    # 2. The disc's own files, made in memory.
    doc = form.form_document(disc, sessions, unit_name=station_name, created_at=created_at, tz=tz,
                             audit_chain_head=audit_chain_head)
    own: list[tuple[str, bytes, str]] = [
        (FORM_PDF, form.render_pdf(doc, font=font), "record-form-pdf"),
        (FORM_HTML, form.render_html(doc).encode("utf-8"), "record-form-html"),
        (INDEX, content.index_html(disc, sessions, station_name=station_name), "index"),
        (README, content.readme(disc, station_name=station_name, audit_chain_head=audit_chain_head),
         "readme"),
    ]
    own_placements = {path: layout.add(path, reserved_ok=True) for path, _, _ in own}
    own_placements[MANIFEST] = layout.add(MANIFEST, reserved_ok=True)
    own_placements[SHA256SUMS] = layout.add(SHA256SUMS, reserved_ok=True)
    volume_id = disc.label.volume_id
    manifest = content.manifest(
        disc, sessions, station_name=station_name, created_at=created_at,
        audit_chain_head=audit_chain_head, volume_id=volume_id,
        joliet_names=layout.joliet_renamed, disc_files=own, generator=content.generator_name())
    manifest_data = content.manifest_bytes(manifest)
    sums = content.sha256sums(
        [(r.sha256, r.disc_path) for r in disc.recordings]
        + [(content.sha256_hex(data), path) for path, data, _ in own]
        + [(content.sha256_hex(manifest_data), MANIFEST)])

    # 3. The image, streamed. Hash threads: one for the sources, one for the image.
    src_exec = ThreadPoolExecutor(1, thread_name_prefix="burner-src-hash")
    img_exec = ThreadPoolExecutor(1, thread_name_prefix="burner-img-hash")
    readers = [
        SourceReader(r.vault_path, r.size, r.sha256, f"recording {r.recording_id}", src_exec)
        for r in disc.recordings
    ]
    files = [_File(p, r.size, fp) for p, r, fp in zip(placements, disc.recordings, readers)]
    for path, data, _ in own + [(MANIFEST, manifest_data, ""), (SHA256SUMS, sums, "")]:
        files.append(_File(own_placements[path], len(data), io.BytesIO(data)))

    part = out_path.with_name(f".{out_path.name}.part")
    iso = None
    fd = -1
    try:
        iso, files = _assemble(layout, files, volume_id, disc.label.set_id)
        total = iso.pvd.space_size * SECTOR
        if total > disc.medium.capacity:
            raise ImageError(
                f"the image of {disc.label} is {human_bytes(total)}, more than {disc.medium.describe()}")
        data_start = _data_start(iso, files)
        try:
            fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            raise ImageError(f"{part} exists: another build of this disc is running or crashed; "
                             "remove it once no build runs") from None
        sink = HashingSink(fd, img_exec, data_start)

        def on_progress(done: int, whole: int, _opaque: object) -> None:
            if cancel is not None and cancel.is_set():
                raise BuildCancelled(str(disc.label))
            if progress is not None:
                progress(done, whole)

        iso.write_fp(sink, blocksize=block_size, progress_cb=on_progress)
        size = os.fstat(fd).st_size
        if size != total:
            raise ImageError(f"pycdlib wrote {size} bytes, expected {total}")
        sha256 = sink.finish(total)
        unverified = [r for r in readers if r.size and not r.verified]
        if unverified:
            raise ImageError(f"{unverified[0].owner}: was never read into the image")
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.chmod(part, 0o444)
        try:
            os.link(part, out_path)
        except FileExistsError:
            raise ImageError(f"{out_path} appeared while building; not overwritten") from None
        os.unlink(part)
        _fsync_dir(out_path.parent)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise ImageError(f"no space left for the image in {out_path.parent}") from exc
        raise ImageError(f"writing {part}: {exc.strerror or exc}") from exc
    except pycdlib.pycdlibexception.PyCdlibException as exc:
        raise ImageError(f"pycdlib refused the layout of {disc.label}: {exc}") from exc
    finally:
        if fd >= 0:
            os.close(fd)
        if part.exists():
            try:
                part.unlink()
            except OSError:  # pragma: no cover
                log.exception("cannot remove the partial image %s", part)
        for reader in readers:
            reader.close()
        src_exec.shutdown(wait=True)
        img_exec.shutdown(wait=True)
        if iso is not None:
            iso.close()

    log.info("built %s: %s, sha256 %s, %.1fs", out_path, human_bytes(total), sha256,
             time.monotonic() - started)
    return ImageResult(
        path=out_path,
        label=disc.label,
        size=total,
        sha256=sha256,
        volume_id=volume_id,
        manifest=manifest,
        joliet_names=layout.joliet_renamed,
        files=len(files),
        seconds=time.monotonic() - started,
        reread_bytes=sink.reread_bytes,
    )


async def build_image_async(disc: PlannedDisc, out_path: Path, **kwargs) -> ImageResult:
    """:func:`build_image` in a worker thread; cancelling the task stops the build."""
    cancel = kwargs.pop("cancel", None) or threading.Event()
    try:
        return await asyncio.to_thread(build_image, disc, out_path, cancel=cancel, **kwargs)
    except asyncio.CancelledError:
        cancel.set()
        raise


def _check_sources(disc: PlannedDisc, *, prehash: bool, cancel: threading.Event | None) -> None:
    """Every vault file exists as a regular file of its catalogued size; with
    ``prehash``, of its catalogued SHA-256 too. Nothing is written before this passes."""
    for r in disc.recordings:
        who = f"recording {r.recording_id}"
        try:
            st = os.stat(r.vault_path)
        except OSError as exc:
            raise SourceMismatch(f"{who}: {r.vault_path}: {exc.strerror or exc}") from exc
        if not os.path.isfile(r.vault_path):
            raise SourceMismatch(f"{who}: {r.vault_path} is not a regular file")
        if st.st_size != r.size:
            raise SourceMismatch(f"{who}: {r.vault_path} is {st.st_size} bytes, catalogued {r.size}")
        if r.size == 0 and r.sha256.lower() != _EMPTY_SHA256:
            raise SourceMismatch(f"{who}: {r.vault_path} is empty but its catalogued hash is not")
    if not prehash:
        return
    for r in disc.recordings:
        h = hashlib.sha256()
        with open(r.vault_path, "rb", buffering=0) as f:
            while block := f.read(BLOCK_SIZE):
                if cancel is not None and cancel.is_set():
                    raise BuildCancelled(str(disc.label))
                h.update(block)
        if h.hexdigest() != r.sha256.lower():
            raise SourceMismatch(
                f"recording {r.recording_id}: {r.vault_path} has SHA-256 {h.hexdigest()}, "
                f"catalogued {r.sha256.lower()}")


def _new_iso(layout: DiscLayout, files: list[_File], volume_id: str, set_id: str) -> pycdlib.PyCdlib:
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, sys_ident="LINUX", vol_ident=volume_id,
            vol_set_ident=set_id.upper()[:128], app_ident_str="EVIDENCE APPLIANCE",
            joliet=3, rock_ridge="1.09", udf="2.60")
    for d in layout.directories:
        iso.add_directory(iso_path=d.iso_path, rr_name=d.rr_name, joliet_path=d.joliet_path,
                          udf_path=d.udf_path, file_mode=DIR_MODE)
    for f in files:
        p = f.placement
        iso.add_fp(f.fp, f.size, iso_path=p.iso_path, rr_name=p.rr_name, joliet_path=p.joliet_path,
                   file_mode=FILE_MODE, udf_path=p.udf_path)
    iso.force_consistency()
    return iso


def _extent(iso: pycdlib.PyCdlib, f: _File) -> int:
    return iso.get_record(iso_path=f.placement.iso_path).extent_location()


def _assemble(layout: DiscLayout, files: list[_File], volume_id: str,
              set_id: str) -> tuple[pycdlib.PyCdlib, list[_File]]:
    """The pycdlib image, with the files added in the order of their data on the disc.

    pycdlib writes file data in the order files were added, but places it in the order
    of its directory walk. When the two agree the image is written front to back and its
    hash needs no read-back; so the layout is made once, the order read off the extents,
    and, if it differs, made again in that order (the extents do not depend on it).
    """
    iso = _new_iso(layout, files, volume_id, set_id)
    with_data = [f for f in files if f.size]
    extents = [_extent(iso, f) for f in with_data]
    if extents == sorted(extents):
        return iso, files
    order = [f for _, f in sorted(zip(extents, with_data), key=lambda t: t[0])]
    order += [f for f in files if not f.size]
    iso.close()
    log.debug("re-adding %d files in disc order", len(order))
    return _new_iso(layout, order, volume_id, set_id), order


def _data_start(iso: pycdlib.PyCdlib, files: list[_File]) -> int | None:
    extents = [_extent(iso, f) for f in files if f.size]
    return min(extents) * SECTOR if extents else None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
