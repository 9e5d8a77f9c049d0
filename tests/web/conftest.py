"""Fixtures of the web tests: ``web`` is a started appliance with its web page on a test
server, an account of every role, and two recordings of different officers."""

import pytest

from appliance.daemon import Appliance
from appliance.vault.base import open_folders
from tests.support.appliance import Harness, make_config
from tests.web.support import add_accounts, seed_recording, start_web


@pytest.fixture
async def web(tmp_path):
    appliance = Appliance(make_config(tmp_path))
    await appliance.start(udev=False, web_listener=False)
    add_accounts(appliance)
    env = await start_web(appliance)
    env.harness = Harness(appliance)
    env.own = seed_recording(appliance, serial="CAM001", officer="张伟", name="DCIM/执法记录_0001.MP4")
    env.other = seed_recording(appliance, serial="CAM002", officer="李娜", name="DCIM/other_0001.MP4")
    try:
        yield env
    finally:
        await env.close()
        await env.server.close()
        await appliance.stop()
        open_folders(tmp_path)
