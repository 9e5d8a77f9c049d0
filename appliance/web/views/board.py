"""The slot board: a large tile per slot, live over server-sent events. No login.

Meant for a screen in the equipment room, read from three metres. It shows the state in
plain words, the officer's name, percent and MB/s, never the recordings. The stream
sends the whole board once, then every tile that changes (coalesced per slot, so a slow
screen never makes the bus wait), and a comment every 15 s to keep the line open.
"""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from appliance.dock.board import PROBLEM_STATES, SlotChanged, SlotStatus
from appliance.web.keys import APPLIANCE
from appliance.web.render import render

KEEPALIVE_S = 15.0


class Streams:
    """The open board streams; at shutdown every one of them ends (the runner must not wait)."""

    def __init__(self) -> None:
        self.closing = False
        self.wakers: set[asyncio.Event] = set()

    def close(self) -> None:
        self.closing = True
        for wake in self.wakers:
            wake.set()


STREAMS = web.AppKey("board_streams", Streams)

_HIDDEN = ("session_id", "port_path", "updated")


def tile_json(status: SlotStatus) -> dict:
    """What a tile shows; never file names or recordings."""
    data = status.to_json()
    for key in _HIDDEN:
        data.pop(key, None)
    data["problem"] = status.state in PROBLEM_STATES
    data["percent"] = int(status.progress * 100)
    return data


async def page(request: web.Request) -> web.Response:
    app = request.app[APPLIANCE]
    tiles = [tile_json(s) for s in app.board.all()]
    return await render(request, "board.html", {"tiles": tiles})


async def events(request: web.Request) -> web.StreamResponse:
    app = request.app[APPLIANCE]
    streams = request.app[STREAMS]
    loop = asyncio.get_running_loop()
    pending: dict[str, SlotStatus] = {}
    wake = asyncio.Event()

    def on_event(event: object) -> None:
        if isinstance(event, SlotChanged):
            loop.call_soon_threadsafe(_note, event.status)

    def _note(status: SlotStatus) -> None:
        pending[status.slot] = status
        wake.set()

    response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)
    unsubscribe = app.bus.subscribe(on_event)
    app.metrics.web_board_clients.inc()
    streams.wakers.add(wake)
    try:
        board = {"slots": [tile_json(s) for s in app.board.all()]}
        await response.write(_sse("board", board))
        while not streams.closing:
            try:
                await asyncio.wait_for(wake.wait(), KEEPALIVE_S)
            except asyncio.TimeoutError:
                await response.write(b": keepalive\n\n")
                continue
            wake.clear()
            batch = list(pending.values())
            pending.clear()
            for status in batch:
                await response.write(_sse("slot", tile_json(status)))
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        unsubscribe()
        streams.wakers.discard(wake)
        app.metrics.web_board_clients.dec()
    return response


def _sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


async def close_streams(app: web.Application) -> None:
    """on_shutdown: end every open board stream."""
    app[STREAMS].close()
