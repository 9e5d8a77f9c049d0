"""Manual docking through a local control socket.

For what udev does not announce: a card reader's image dumped to a file, a folder, the
demo's simulated cameras, and the tests. ``appliance dock attach`` speaks to it. The
socket is root-only (0600) in the state folder; one JSON request per line, one JSON
reply per line. The request is validated like any other outside input.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from appliance.dock.events import DockAction, DockEvent, SourceKind

log = logging.getLogger(__name__)
MAX_REQUEST = 64 << 10


class BadRequest(ValueError):
    """A control request that cannot be carried out."""


def parse_request(data: dict, known_slots: list[int]) -> DockEvent:
    """A DockEvent from an ``attach``/``detach`` request, or BadRequest naming the field."""
    action = data.get("action")
    if action not in ("attach", "detach"):
        raise BadRequest("action must be 'attach' or 'detach'")
    slot = data.get("slot")
    if not isinstance(slot, int) or isinstance(slot, bool) or (known_slots and slot not in known_slots):
        raise BadRequest(f"slot must be one of {known_slots or 'the configured slots'}")
    if action == "detach":
        return DockEvent(DockAction.REMOVE, slot, f"manual-{slot}", Path("/"), SourceKind.DIRECTORY)
    source = data.get("source")
    if not isinstance(source, str) or not os.path.isabs(source) or not os.path.exists(source):
        raise BadRequest("source must be an absolute path that exists")
    try:
        kind = SourceKind(data.get("kind") or _guess_kind(Path(source)))
    except ValueError:
        raise BadRequest("kind must be block, image or directory") from None
    serial = data.get("serial")
    if serial is not None and (not isinstance(serial, str) or len(serial) > 64):
        raise BadRequest("serial must be a string of at most 64 characters")
    return DockEvent(DockAction.ADD, slot, f"manual-{slot}", Path(source), kind, serial=serial,
                     vendor=_opt_str(data, "vendor"), model=_opt_str(data, "model"),
                     fs_type=_opt_str(data, "fs_type"))


@contextmanager
def socket_path(path: Path) -> Iterator[str]:
    """A name for ``path`` that fits a unix socket address (108 bytes).

    A state folder deep in the file system would not fit; its folder is then reached
    through ``/proc/self/fd/N``, which the kernel resolves to the same place.
    """
    if len(os.fsencode(path)) < 100:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def _opt_str(data: dict, key: str) -> str | None:
    value = data.get(key)
    return value[:64] if isinstance(value, str) else None


def _guess_kind(path: Path) -> str:
    if path.is_dir():
        return SourceKind.DIRECTORY.value
    if path.is_block_device():
        return SourceKind.BLOCK.value
    return SourceKind.IMAGE.value


#: How long a request's source may take to answer before the request is refused.
SOURCE_CHECK_S = 5.0


async def parse_off_loop(data: dict, known_slots: list[int], timeout: float = SOURCE_CHECK_S) -> DockEvent:
    """:func:`parse_request` in a thread of its own: it looks at the source path, and a source
    that hangs (a stalled card reader, a dead FUSE mount) must never stop the event loop.
    A daemon thread, not the executor: a check that never returns cannot hold up shutdown."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[DockEvent] = loop.create_future()

    def settle(event: DockEvent | None, exc: BaseException | None) -> None:
        if done.done():
            return
        if exc is not None:
            done.set_exception(exc)
        else:
            done.set_result(event)  # type: ignore[arg-type]

    def check() -> None:
        try:
            event = parse_request(data, known_slots)
        except BaseException as exc:  # noqa: BLE001 - handed to the loop as the request's answer
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, event, None)

    threading.Thread(target=check, name="control-source-check", daemon=True).start()
    try:
        return await asyncio.wait_for(done, timeout)
    except TimeoutError:
        raise BadRequest(f"source does not answer within {timeout:g} s") from None


class ControlServer:
    """The unix socket that accepts manual dock requests."""

    def __init__(self, path: Path, known_slots: list[int], emit: Callable[[DockEvent], None]) -> None:
        self.path = path
        self._slots = known_slots
        self._emit = emit
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() or self.path.is_symlink():
            self.path.unlink()
        old = os.umask(0o177)
        try:
            with socket_path(self.path) as path:
                self._server = await asyncio.start_unix_server(self._handle, path=path,
                                                               limit=MAX_REQUEST)
        finally:
            os.umask(old)

    async def stop(self) -> None:
        if self._server:
            self._server.close()
            await self._server.wait_closed()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                writer.write((json.dumps(await self._answer(line), ensure_ascii=False) + "\n").encode())
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError) as exc:
            log.warning("control socket: dropped a client: %s", exc)
        finally:
            writer.close()

    async def _answer(self, line: bytes) -> dict:
        try:
            data = json.loads(line)
            if not isinstance(data, dict):
                raise BadRequest("a request is a JSON object")
            event = await parse_off_loop(data, self._slots)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {"ok": False, "error": "not a JSON request"}
        except BadRequest as exc:
            return {"ok": False, "error": str(exc)}
        self._emit(event)
        return {"ok": True}


async def send_request(path: Path, request: dict, timeout: float = 10) -> dict:
    """Send one request to a running daemon's control socket and return its reply."""
    with socket_path(path) as short:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(short), timeout)
    try:
        writer.write((json.dumps(request) + "\n").encode())
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
        return json.loads(line)
    finally:
        writer.close()
