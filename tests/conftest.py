"""Shared pytest configuration: the camera fixtures (tests/support/camera_fixtures.py)."""

pytest_plugins = ["tests.support.camera_fixtures", "tests.support.appliance_fixtures"]
