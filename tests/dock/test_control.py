"""Manual docking requests are outside input: validated field by field."""

import pytest

from appliance.dock.control import BadRequest, parse_request
from appliance.dock.events import DockAction, SourceKind


def test_attach_request_becomes_a_dock_event(tmp_path):
    event = parse_request({"action": "attach", "slot": 2, "source": str(tmp_path), "serial": "X1"}, [1, 2])
    assert event.action is DockAction.ADD and event.slot == 2 and event.kind is SourceKind.DIRECTORY
    assert event.serial == "X1"


@pytest.mark.parametrize("request_, words", [
    ({"action": "format"}, "action"),
    ({"action": "attach", "slot": 9, "source": "/"}, "slot"),
    ({"action": "attach", "slot": True, "source": "/"}, "slot"),
    ({"action": "attach", "slot": 1, "source": "relative/path"}, "absolute"),
    ({"action": "attach", "slot": 1, "source": "/no/such/thing"}, "exists"),
    ({"action": "attach", "slot": 1, "source": "/", "kind": "tape"}, "kind"),
    ({"action": "attach", "slot": 1, "source": "/", "serial": 5}, "serial"),
])
def test_bad_requests_are_refused_with_the_field_named(request_, words):
    with pytest.raises(BadRequest, match=words):
        parse_request(request_, [1, 2])


async def test_control_socket_answers_garbage_with_an_error(tmp_path):
    from appliance.dock.control import ControlServer, send_request
    import asyncio
    got = []
    server = ControlServer(tmp_path / "s.sock", [1], got.append)
    await server.start()
    try:
        assert (tmp_path / "s.sock").stat().st_mode & 0o077 == 0
        reader, writer = await asyncio.open_unix_connection(str(tmp_path / "s.sock"))
        writer.write(b"\xff\xfe not json\n")
        await writer.drain()
        assert b"not a JSON request" in await reader.readline()
        writer.close()
        reply = await send_request(tmp_path / "s.sock", {"action": "attach", "slot": 1,
                                                         "source": str(tmp_path)})
        assert reply == {"ok": True} and len(got) == 1
    finally:
        await server.stop()


async def test_control_socket_works_in_a_deep_state_folder(tmp_path):
    from appliance.dock.control import ControlServer, send_request
    deep = tmp_path / ("very-long-folder-name-" * 6) / "state"
    deep.mkdir(parents=True)
    server = ControlServer(deep / "dock.sock", [1], lambda e: None)
    await server.start()
    try:
        assert len(str(deep / "dock.sock")) > 108
        reply = await send_request(deep / "dock.sock", {"action": "detach", "slot": 1})
        assert reply == {"ok": True}
    finally:
        await server.stop()


async def test_a_source_that_hangs_is_refused_and_the_daemon_keeps_answering(tmp_path, fault_fs):
    import asyncio
    import time

    from appliance.dock.control import ControlServer, send_request
    source = tmp_path / "reader"
    source.mkdir()
    fs = fault_fs(source)
    fs.unplug("hang")  # a card reader that stopped answering
    got = []
    server = ControlServer(tmp_path / "s.sock", [1], got.append)
    await server.start()
    try:
        ticks = 0

        async def ticker() -> None:  # runs only while the event loop is free
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.05)

        task = asyncio.create_task(ticker())
        started = time.monotonic()
        reply = await send_request(tmp_path / "s.sock", {"action": "attach", "slot": 1,
                                                         "source": str(fs.path)}, timeout=20)
        task.cancel()
        assert reply["ok"] is False and "does not answer" in reply["error"], reply
        assert 4.5 < time.monotonic() - started < 15 and got == []
        assert ticks > 50, "the event loop was blocked while the source hung"
        reply = await send_request(tmp_path / "s.sock", {"action": "detach", "slot": 1})
        assert reply == {"ok": True}
    finally:
        fs.plug()
        await server.stop()
