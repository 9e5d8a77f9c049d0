"""Configuration: the documented default, and a clear error for every kind of bad value."""

from pathlib import Path

import pytest

from appliance.config import Config, default_config_path, load_config, parse_config, parse_size
from appliance.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_documented_default_equals_the_embedded_default():
    loaded = load_config(ROOT / "config.yaml")
    assert loaded.model_dump(exclude={"source"}) == Config().model_dump(exclude={"source"})


def test_relative_paths_are_taken_from_the_config_folder(tmp_path):
    (tmp_path / "c.yaml").write_text("vault: {path: v}\nstate_dir: s\n")
    config = load_config(tmp_path / "c.yaml")
    assert config.vault.path == tmp_path / "v"
    assert config.state_dir == tmp_path / "s"
    assert config.catalog_path == tmp_path / "v" / "catalog" / "catalog.sqlite"


@pytest.mark.parametrize("data, key, words", [
    ({"vault": {"backend": "nfs"}}, "vault.backend", "directory"),
    ({"vault": {"backend": "zfs"}}, "vault", "dataset"),
    ({"vault": {"reserve": "lots"}}, "vault.reserve", "not a size"),
    ({"vault": {"reserve": True}}, "vault.reserve", "boolean"),
    ({"web": {"port": 70000}}, "web.port", "65535"),
    ({"web": {"port": "http"}}, "web.port", "integer"),
    ({"dock": {"slots": {"one": "pci-1"}}}, "dock.slots.one", "integer"),
    ({"dock": {"slots": {0: "pci-1"}}}, "dock.slots", "outside"),
    ({"dock": {"slots": {1: "pci-1", 2: "pci-1"}}}, "dock.slots", "mapped to slots 1 and 2"),
    ({"dock": {"block_size": "1000"}}, "dock.block_size", "multiple of 4KiB"),
    ({"dock": {"io_concurrency": 0}}, "dock.io_concurrency", "greater than or equal"),
    ({"ingest": {"hashes": ["md5"]}}, "ingest.hashes.0", "sha256"),
    ({"ingest": {"hashes": ["sm3"]}}, "ingest.hashes", "sha256 is always"),
    ({"ingest": {"wipe": "always"}}, "ingest.wipe", "after-verify"),
    ({"station": {"id": "a b/c"}}, "station.id", "pattern"),
    ({"profiles": []}, "profiles", "at least one"),
    ({"profiles": [{"name": "x", "extensions": ["mp4"]}]}, "profiles.0.extensions", "like .mp4"),
    ({"profiles": [{"name": "x", "media_dirs": ["../etc"]}]}, "profiles.0.media_dirs", "relative"),
    ({"profiles": [{"name": "x", "identity": {"pattern": "("}}]}, "profiles.0.identity.pattern",
     "regular expression"),
    ({"profiles": [{"name": "x", "identity": {"pattern": "SN=.*"}}]}, "profiles.0.identity.pattern",
     "group"),
    ({"profiles": [{"name": "x", "clock_sync": {"format": "now"}}]}, "profiles.0.clock_sync.format",
     "strftime"),
    ({"valut": {}}, "valut", "unknown key"),
])
def test_bad_value_names_key_path_and_reason(data, key, words):
    with pytest.raises(ConfigError) as err:
        parse_config(data, "test.yaml")
    text = str(err.value)
    assert f"test.yaml: {key}" in text
    assert words in text


def test_top_level_must_be_a_mapping():
    with pytest.raises(ConfigError, match="mapping"):
        parse_config(["a"], "x.yaml")


def test_unreadable_and_invalid_yaml_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("vault: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")


def test_sizes_accept_units():
    assert parse_size("8MiB") == 8 << 20
    assert parse_size("1GB") == 10**9
    assert parse_size(4096) == 4096
    with pytest.raises(ValueError):
        parse_size(-1)


def test_config_path_order(tmp_path, monkeypatch):
    assert default_config_path({"APPLIANCE_CONFIG": "/x/c.yaml"}) == Path("/x/c.yaml")
    expected = Path("/etc/appliance/config.yaml")
    assert default_config_path({}) in (expected, Path("config.yaml"))


def test_sm3_is_kept_after_sha256():
    config = parse_config({"ingest": {"hashes": ["sm3", "sha256"]}})
    assert config.ingest.hashes == ["sha256", "sm3"]
