"""A small synchronous client for the QEMU Machine Protocol (QMP) over a unix socket.

Only what the system tests need: the greeting and capabilities handshake, commands with their
answers, and the asynchronous events (``DEVICE_DELETED`` and the like) kept for later waits.
Written here rather than taken from a package so that the tests need nothing beyond the
standard library to talk to QEMU.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any


class QMPError(Exception):
    """QEMU answered a command with an error."""

    def __init__(self, command: str, error: dict[str, Any]) -> None:
        super().__init__(f"{command}: {error.get('class')}: {error.get('desc')}")
        self.command = command
        self.error = error


class QMPClient:
    """One QMP connection. Not thread-safe: one test thread drives one VM."""

    def __init__(self, path: str, timeout: float = 30.0) -> None:
        self._path = path
        self._timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def connect(self, wait: float = 30.0) -> None:
        """Connect (retrying while QEMU creates the socket) and negotiate capabilities."""
        deadline = time.monotonic() + wait
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(self._path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        sock.settimeout(self._timeout)
        self._sock = sock
        greeting = self._read_message()
        if "QMP" not in greeting:
            raise ConnectionError(f"not a QMP greeting: {greeting!r}")
        self.execute("qmp_capabilities")

    def close(self) -> None:
        """Close the socket; QEMU keeps running."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def execute(self, command: str, **arguments: Any) -> Any:
        """Run one command and return its ``return`` value; raise :class:`QMPError` on error."""
        if self._sock is None:
            raise ConnectionError("QMP is not connected")
        self._next_id += 1
        request: dict[str, Any] = {"execute": command, "id": self._next_id}
        if arguments:
            request["arguments"] = arguments
        self._sock.sendall(json.dumps(request).encode() + b"\n")
        while True:
            message = self._read_message()
            if "event" in message:
                self.events.append(message)
                continue
            if message.get("id") != self._next_id:
                continue
            if "error" in message:
                raise QMPError(command, message["error"])
            return message.get("return")

    def wait_event(self, name: str, timeout: float = 30.0, **data: Any) -> dict[str, Any]:
        """Wait for (and consume) an event called ``name`` whose data includes ``data``."""
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.events):
                if event["event"] == name and all(
                    event.get("data", {}).get(k) == v for k, v in data.items()
                ):
                    return self.events.pop(i)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no QMP event {name} {data} within {timeout} s")
            self._pump_events(remaining)

    def _pump_events(self, timeout: float) -> None:
        assert self._sock is not None
        self._sock.settimeout(min(timeout, 1.0))
        try:
            message = self._read_message()
        except TimeoutError:
            return
        finally:
            self._sock.settimeout(self._timeout)
        if "event" in message:
            self.events.append(message)

    def _read_message(self) -> dict[str, Any]:
        assert self._sock is not None
        while b"\n" not in self._buffer:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionError("QEMU closed the QMP socket")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)
