"""Fixtures of the system tests: the appliance image (built or reused from the cache) and
virtual machines booted from it.

The image is built once per session by ``images/build.sh``; a rerun with nothing changed takes
seconds. A machine that cannot run these tests (not root, too little disk, no QEMU after the
build tried to install it) skips them with the reason; a broken recipe fails them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.system.vm import VM

REPO = Path(__file__).resolve().parents[2]
OUTPUT = REPO / "test-output" / "system"
BUILD_SCRIPT = REPO / "images" / "build.sh"
IMAGE_CACHE = Path(os.environ.get("APPLIANCE_IMAGE_CACHE", "/var/cache/appliance-images"))

# A base built from scratch: ~15 min here, more on a slow mirror. Given to the first system
# test (whose setup runs the build) on top of the per-test timeout from pyproject.toml.
BUILD_TIMEOUT = int(os.environ.get("APPLIANCE_IMAGE_BUILD_TIMEOUT", "2700"))
# What a full build needs in the cache: the scratch tree, a raw disk and the layers.
NEEDED_FREE_GIB = 20


@dataclass(frozen=True)
class BuiltImage:
    """What images/build.sh produced."""

    appliance_image: Path
    base_image: Path
    ssh_key: Path
    kernel: str


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give the first selected system test the time to build the image.

    Runs last, after -k and -m have deselected, so the longer timeout lands on the test that
    actually triggers the session-scoped build.
    """
    system = [item for item in items if item.get_closest_marker("system")]
    if not system:
        return
    try:
        base = float(config.getini("timeout") or 900)
    except ValueError:  # pytest-timeout is not installed: nothing to extend
        return
    system[0].add_marker(pytest.mark.timeout(BUILD_TIMEOUT + int(base)))


def missing_requirements() -> str | None:
    """Why this machine cannot build and boot the image, or None if it can."""
    if os.environ.get("APPLIANCE_SKIP_SYSTEM_TESTS") == "1":
        return "APPLIANCE_SKIP_SYSTEM_TESTS=1"
    if os.geteuid() != 0:
        return "system tests need root (debootstrap, chroot, loop devices)"
    if not Path("/dev/loop-control").exists():
        return "no loop devices (/dev/loop-control) to build the image"
    if shutil.which("apt-get") is None and shutil.which("qemu-system-x86_64") is None:
        return "no qemu-system-x86_64 and no apt-get to install it"
    IMAGE_CACHE.mkdir(parents=True, exist_ok=True)
    free_gib = shutil.disk_usage(IMAGE_CACHE).free / 2**30
    have_image = any(IMAGE_CACHE.glob("appliance-*/appliance.qcow2"))
    if free_gib < NEEDED_FREE_GIB and not have_image:
        return f"only {free_gib:.1f} GiB free in {IMAGE_CACHE}; building the image needs {NEEDED_FREE_GIB}"
    return None


def record_timing(name: str, seconds: float) -> None:
    """Append a timing to test-output/system/timings.jsonl (read by people, not by tests)."""
    OUTPUT.mkdir(parents=True, exist_ok=True)
    with open(OUTPUT / "timings.jsonl", "a") as f:
        f.write(json.dumps({"what": name, "seconds": round(seconds, 1), "at": time.time()}) + "\n")


@pytest.fixture(scope="session")
def appliance_image() -> BuiltImage:
    """The appliance image from images/build.sh (built now, or reused from the cache)."""
    reason = missing_requirements()
    if reason:
        pytest.skip(reason)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    log = OUTPUT / "build.log"
    started = time.monotonic()
    with open(log, "wb") as stderr:
        result = subprocess.run(
            ["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, stderr=stderr,
            env={**os.environ, "APPLIANCE_IMAGE_CACHE": str(IMAGE_CACHE)},
            timeout=BUILD_TIMEOUT,
        )
    record_timing("image build (images/build.sh)", time.monotonic() - started)
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        pytest.fail(f"images/build.sh failed ({result.returncode}); see {log}\n{tail}")
    values = dict(
        line.split("=", 1) for line in result.stdout.decode().splitlines() if "=" in line
    )
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 is not installed")
    return BuiltImage(
        appliance_image=Path(values["appliance_image"]),
        base_image=Path(values["base_image"]),
        ssh_key=Path(values["ssh_key"]),
        kernel=values["kernel"],
    )


@pytest.fixture(scope="module")
def vm(appliance_image: BuiltImage, request: pytest.FixtureRequest):
    """One booted appliance VM for the whole test module (a TCG boot costs about a minute).

    Its console log and QEMU command line stay in test-output/system/<module>/; its disks are
    removed afterwards.
    """
    workdir = OUTPUT / request.module.__name__.rsplit(".", 1)[-1]
    if workdir.exists():
        shutil.rmtree(workdir)
    machine = VM(appliance_image.appliance_image, appliance_image.ssh_key, workdir)
    try:
        machine.start()
        record_timing(f"{workdir.name}: boot to SSH", machine.boot_seconds or 0)
        yield machine
    finally:
        started = time.monotonic()
        machine.shutdown()
        record_timing(f"{workdir.name}: shutdown", time.monotonic() - started)
        machine.remove_disks()
