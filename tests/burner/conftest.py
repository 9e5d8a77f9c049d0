"""Fixtures of the burner tests: recordings in a folder vault, and the outside tools."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from appliance.burner.model import DiscRecording

T0 = datetime(2024, 5, 1, 8, 30, tzinfo=timezone.utc)

#: tool -> Debian package (scripts/packages/test.txt)
TOOLS = {"xorriso": "xorriso", "isoinfo": "genisoimage", "7zz": "7zip", "pdftotext": "poppler-utils",
         "pdffonts": "poppler-utils", "sha256sum": "coreutils"}


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed: apt-get install {TOOLS.get(tool, tool)}")
    return path


MakeRecordings = Callable[..., list[DiscRecording]]


@pytest.fixture
def vault(tmp_path: Path) -> Path:
    path = tmp_path / "vault"
    path.mkdir()
    return path


@pytest.fixture
def make_recordings(vault: Path) -> MakeRecordings:
    """``make_recordings([(disc_path, size), ...], session=...)``: real files in the vault
    with random content and their true hashes, as the catalog would describe them."""
    counter = [0]

    def make(items: Sequence[tuple[str, int]], *, session: str = "S20240501-0001",
             officer: str = "张三", serial: str = "DSJ0001", start: datetime = T0) -> list[DiscRecording]:
        out = []
        for disc_path, size in items:
            counter[0] += 1
            n = counter[0]
            path = vault / f"{n:05d}.bin"
            data = os.urandom(size)
            path.write_bytes(data)
            path.chmod(0o444)
            t = start + timedelta(minutes=10 * n)
            out.append(DiscRecording(
                recording_id=n, session_id=session, vault_path=path, disc_path=disc_path,
                size=size, sha256=hashlib.sha256(data).hexdigest(), officer=officer,
                device_serial=serial, device_brand="华德安", device_model="DSJ-V9",
                start_time=t, end_time=t + timedelta(minutes=5), duration_s=300.0,
                format="MP4 H.264 1920x1080"))
        return out

    return make
