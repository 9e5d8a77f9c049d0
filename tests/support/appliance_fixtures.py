"""Pytest fixtures for a real appliance running in the test's process."""

import os
import shutil

import pytest

from appliance.daemon import Appliance
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
        # The vault makes committed folders read-only; let pytest clean tmp_path.
        for root, dirs, _ in os.walk(tmp_path):
            for d in dirs:
                try:
                    os.chmod(os.path.join(root, d), 0o755)
                except OSError:
                    pass


def pytest_configure(config):
    config.addinivalue_line("markers", "config(**sections): config overrides for the harness fixture")
