"""Pytest fixtures for a real appliance running in the test's process."""

import pytest

from appliance.daemon import Appliance
from appliance.vault.base import open_folders
from tests.support.appliance import Harness, make_config


@pytest.fixture
async def harness(tmp_path, request):
    """A started appliance; parametrize config with @pytest.mark.config(section={...})."""
    marker = request.node.get_closest_marker("config")
    config = make_config(tmp_path, **(marker.kwargs if marker else {}))
    appliance = Appliance(config)
    await appliance.start(udev=False, web_listener=False)
    h = Harness(appliance)
    try:
        yield h
    finally:
        await appliance.stop()
        open_folders(tmp_path)  # the vault closes committed folders; let pytest clean up
