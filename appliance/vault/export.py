"""Release packages (regulation article 16): an approved release as one ZIP file.

The package holds a copy of every file of the release (stored, not recompressed), a
``SHA256SUMS`` file that ``sha256sum -c`` checks, and ``release.json`` with the request,
the approval and every file's facts. Each file is hashed *while* it is copied and must
match the hash the catalog recorded at ingest, so the package is proven to hold the
originals byte for byte. The ZIP is written under a temporary name, fsync'ed and renamed:
a crash never leaves a package that looks complete. Blocking: run it in a thread.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

from appliance.errors import VerifyMismatch
from appliance.vault.base import Vault

CHUNK = 1 << 20
#: a fixed time for every entry, so the same release always gives the same bytes
_ZIP_TIME = (2020, 1, 1, 0, 0, 0)


def package_name(number: str) -> str:
    return f"release-{number}.zip"


def write_package(vault: Vault, dest_dir: Path, number: str, recordings: list[dict], meta: dict) -> tuple[Path, str, int]:
    """Write the package of release ``number``; returns (path, SHA-256 of the ZIP, size)."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / package_name(number)
    tmp = dest_dir / f".partial-{final.name}"
    sums: list[str] = []
    files: list[dict] = []
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for r in recordings:
                arcname = f"files/{r['session_id']}/{r['rel_path']}"
                info = zipfile.ZipInfo(arcname, _ZIP_TIME)
                info.compress_type = zipfile.ZIP_STORED
                info.external_attr = 0o444 << 16
                digest = hashlib.sha256()
                with open(vault.absolute(r["vault_path"]), "rb") as src, zf.open(info, "w", force_zip64=True) as out:
                    while chunk := src.read(CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                if digest.hexdigest() != r["sha256"]:
                    raise VerifyMismatch(f"{r['vault_path']}: hash {digest.hexdigest()} is not the recorded "
                                         f"{r['sha256']}; nothing was exported: run `appliance verify`")
                sums.append(f"{r['sha256']}  {arcname}")
                files.append({"file": arcname, "sha256": r["sha256"], "size": r["size"],
                              "recorded": r["camera_mtime"], "duration_s": r.get("duration_s"),
                              "device": r["device_serial"], "officer": r.get("officer_name"),
                              "recording_id": r["id"]})
            _text(zf, "SHA256SUMS", "\n".join(sums) + "\n")
            _text(zf, "release.json", json.dumps({**meta, "files": files}, ensure_ascii=False, indent=2) + "\n")
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        dir_fd = os.open(dest_dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    digest = hashlib.sha256()
    with open(final, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return final, digest.hexdigest(), final.stat().st_size


def _text(zf: zipfile.ZipFile, name: str, text: str) -> None:
    info = zipfile.ZipInfo(name, _ZIP_TIME)
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o444 << 16
    zf.writestr(info, text.encode("utf-8"))
