"""Start-up resolves what a crash left: committed sessions completed, others interrupted."""

from pathlib import Path

from appliance.catalog import sessions as cat
from appliance.catalog.db import Catalog
from appliance.dock.recovery import recover_unfinished
from appliance.vault.copier import PARTIAL_PREFIX
from appliance.vault.directory import DirectoryVault
from tests.support.appliance import make_config


def _session(catalog, sid, vault_dir):
    catalog.run(cat.create, cat.NewSession(id=sid, device_serial="C1", device_id=None, officer_id=None,
                                           slot="1", port_path="p", profile="generic", quarantined=False,
                                           vault_dir=vault_dir))


def test_uncommitted_session_becomes_interrupted_and_loses_its_partials(tmp_path):
    config = make_config(tmp_path)
    vault = DirectoryVault(config)
    vault.prepare()
    catalog = Catalog(config.catalog_path)
    folder = vault.make_session_dir(Path("media/2026/11/27/C1/s1/files"))
    (folder / (PARTIAL_PREFIX + "x")).write_bytes(b"half")
    _session(catalog, "s1", "media/2026/11/27/C1/s1")
    catalog.run(cat.set_state, "s1", "copying")
    out = recover_unfinished(catalog, vault)
    assert [(r.session_id, r.was, r.now, r.partials_removed) for r in out] == [("s1", "copying", "interrupted", 1)]
    assert catalog.run(cat.get, "s1").state == "interrupted"
    assert catalog.run(cat.resumable, "C1").id == "s1"
    catalog.close()


def test_committed_session_is_sealed_and_done(tmp_path):
    config = make_config(tmp_path)
    vault = DirectoryVault(config)
    vault.prepare()
    catalog = Catalog(config.catalog_path)
    vault.make_session_dir(Path("media/2026/11/27/C1/s2/files"))
    _session(catalog, "s2", "media/2026/11/27/C1/s2")
    catalog.run(cat.set_state, "s2", "committing")
    catalog.run(cat.commit, "s2", manifest_sha256="ab" * 32, camera_newest=None, clock_drift_s=None,
                snapshot=None)
    out = recover_unfinished(catalog, vault)
    assert out[0].now == "done"
    assert (vault.root / "media/2026/11/27/C1/s2").stat().st_mode & 0o222 == 0
    assert catalog.run(cat.resumable, "C1") is None
    catalog.close()
    (vault.root / "media/2026/11/27/C1/s2").chmod(0o755)
    (vault.root / "media/2026/11/27/C1/s2/files").chmod(0o755)
