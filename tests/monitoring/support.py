"""Helpers of the monitoring tests: promtool, a real Prometheus server, appliance processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
import yaml

from appliance.vault.base import open_folders

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
PYTHON = sys.executable
T = TypeVar("T")


def tool(name: str) -> str:
    """The path of a tool from Debian's ``prometheus`` package, or skip with the reason."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian package 'prometheus', listed in "
                    f"scripts/packages/test.txt)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check: Callable[[], T], timeout: float, what: str, interval: float = 0.25) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # a server still starting
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last error: {last_error})")


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 5) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def stop_process(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; only this process, never by name."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)




def make_camera(folder: Path, serial: str, files: int = 3, size: int = 200_000) -> Path:
    """A camera as a plain folder: DEVICE.TXT and a few 'recordings'."""
    (folder / "DCIM").mkdir(parents=True, exist_ok=True)
    (folder / "DEVICE.TXT").write_text(f"SN={serial}\n")
    for i in range(files):
        (folder / "DCIM" / f"{serial}_{i:04d}.MP4").write_bytes(os.urandom(size))
    return folder


class ApplianceProcess:
    """``appliance run`` in a subprocess on a directory vault, with its own config file."""

    def __init__(self, root: Path, *, station: str, reserve: str | int = 0,
                 metrics: dict | None = None) -> None:
        self.root = root
        self.port = free_port()
        root.mkdir(parents=True, exist_ok=True)
        config = {
            "station": {"id": station},
            "state_dir": str(root / "state"),
            "vault": {"backend": "directory", "path": str(root / "vault"), "reserve": reserve},
            "web": {"host": "127.0.0.1", "port": self.port},
            "dock": {"slots": {i: f"port-{i}" for i in range(1, 5)}, "mount_root": str(root / "mnt"),
                     "udev": False, "block_size": "1MiB"},
            "ingest": {"ffprobe": False},
        }
        if metrics:
            config["metrics"] = metrics
        self.config = root / "config.yaml"
        self.config.write_text(yaml.safe_dump(config, allow_unicode=True))
        self.log = root / "appliance.log"
        self.proc: subprocess.Popen | None = None

    def cli(self, *args: str) -> str:
        out = subprocess.run([PYTHON, "-m", "appliance", *args, "--config", str(self.config)],
                             capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert out.returncode == 0, f"appliance {' '.join(args)}: {out.stdout}{out.stderr}"
        return out.stdout

    def start(self) -> "ApplianceProcess":
        self.proc = subprocess.Popen([PYTHON, "-m", "appliance", "run", "--config", str(self.config)],
                                     stdout=self.log.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT)
        wait_until(lambda: self._alive() and http_get(self.url("/api/v1/health"))[0] == 200, 60,
                   f"the appliance on port {self.port} (log: {self.log})")
        return self

    def _alive(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"the appliance exited: {self.log.read_text(errors='replace')[-3000:]}")
        return True

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def dock(self, slot: int, source: Path) -> None:
        self.cli("dock", "attach", "--slot", str(slot), str(source))

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        open_folders(self.root)


class Prometheus:
    """A real Prometheus server on loopback, with a temporary config and storage."""

    def __init__(self, root: Path, scrape_configs: list[dict], rule_files: list[Path],
                 interval: str = "1s") -> None:
        self.binary = tool("prometheus")
        self.root = root
        self.port = free_port()
        root.mkdir(parents=True, exist_ok=True)
        config = {"global": {"scrape_interval": interval, "evaluation_interval": interval,
                             "scrape_timeout": interval},
                  "rule_files": [str(p) for p in rule_files],
                  "scrape_configs": scrape_configs}
        self.config = root / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(config))
        self.log = root / "prometheus.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Prometheus":
        self.proc = subprocess.Popen(
            [self.binary, f"--config.file={self.config}", f"--storage.tsdb.path={self.root / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1h",
             "--web.enable-lifecycle"],
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT, cwd=self.root)
        wait_until(lambda: self._alive() and http_get(self.url("/-/ready"))[0] == 200, 60,
                   f"Prometheus on port {self.port} (log: {self.log})")
        return self

    def _alive(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited: {self.log.read_text(errors='replace')[-3000:]}")
        return True

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def api(self, path: str, **params: str) -> dict:
        status, body = http_get(self.url(f"/api/v1/{path}?{urllib.parse.urlencode(params)}"))
        data = json.loads(body)
        assert status == 200 and data["status"] == "success", data
        return data["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def alerts(self) -> list[dict]:
        return self.api("alerts")["alerts"]

    def alert(self, name: str, station: str) -> dict | None:
        for a in self.alerts():
            if a["labels"].get("alertname") == name and a["labels"].get("station") == station:
                return a
        return None

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


def metric_names_in(expr: str) -> set[str]:
    """The ``appliance_*`` metric names an expression uses."""
    import re

    return set(re.findall(r"\bappliance_[a-z0-9_]+", expr))


def exposed_names(text: str) -> set[str]:
    """Every sample name in a text exposition (with _total, _bucket, _info, ...)."""
    from prometheus_client.parser import text_string_to_metric_families

    return {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}
