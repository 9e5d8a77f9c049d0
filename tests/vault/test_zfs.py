"""The zfs backend's reseal against recorded `zfs` answers (the real thing runs in
tests/system/test_vault_zfs.py): which commands, in which order, and what is refused."""

from __future__ import annotations

import pytest

from appliance.config import parse_config
from appliance.errors import VaultError
from appliance.vault import zfs

CHILDREN = ("media", "quarantine", "catalog")


class FakeZfs:
    """Answers `zfs list`, `holds` and `diff` like a pool with held sessions S1 and S2 and
    one zfs-autobackup snapshot; remembers every command."""

    def __init__(self, diffs: dict[tuple[str, str], str]) -> None:
        self.diffs = diffs
        self.calls: list[list[str]] = []
        self.snapshots = [f"tank/ev/{c}@{n}" for n in ("ingest-S1", "ab-20261101", "ingest-S2") for c in CHILDREN]
        self.held = {s for s in self.snapshots if "@ingest-" in s}

    def __call__(self, argv, *, readonly, ok_codes=(0,)):
        self.calls.append(argv)
        if argv[:2] == ["zfs", "list"] and "name,userrefs" in argv:
            return "".join(f"{s}\t1\n" for s in self.snapshots)
        if argv[:2] == ["zfs", "list"]:
            return "".join(f"{s}\n" for s in argv[argv.index("name") + 1:] if s in self.snapshots)
        if argv[:2] == ["zfs", "holds"]:
            return "".join(f"{s}\t{zfs.HOLD_TAG if s in self.held else 'zfs_autobackup:st1'}\tFri Nov 27 2026\n"
                           for s in argv[3:] if s in self.held or "@ab-" in s)
        if argv[:2] == ["zfs", "snapshot"]:
            self.snapshots += argv[2:]
        if argv[:2] == ["zfs", "hold"]:
            self.held.update(argv[3:])
        if argv[:2] == ["zfs", "release"]:
            self.held.difference_update(argv[3:])
        if argv[:2] == ["zfs", "diff"]:
            return self.diffs.get((argv[4], argv[5]), "")
        return ""

    def changes(self) -> list[list[str]]:
        return [c for c in self.calls if c[1] in ("snapshot", "hold", "release", "destroy")]


def _a_gone_b_changed(root) -> str:
    """`zfs diff -H -F` of media/s1/a.MP4 removed and media/s2/b.MP4 changed."""
    return f"-\tF\t{root / 'media/s1/a.MP4'}\nM\tF\t{root / 'media/s2/b.MP4'}\n"


def _in_snapshot(root, snapshot: str, rel: str, data: bytes):
    """A file as the media dataset's snapshot shows it (.zfs/snapshot/<name>/...)."""
    path = root / "media/.zfs/snapshot" / snapshot / rel
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def vault(tmp_path):
    config = parse_config({"vault": {"backend": "zfs", "dataset": "tank/ev", "path": str(tmp_path)},
                           "station": {"id": "st1"}})
    return zfs.ZfsVault(config)


def test_a_reseal_checks_each_held_snapshot_against_the_next_and_then_retires_them(monkeypatch, vault, tmp_path):
    fake = FakeZfs({
        ("tank/ev/media@ingest-S1", "tank/ev/media@ingest-S2"): "+\tF\t" + str(tmp_path / "media/s2/b.MP4") + "\n",
        ("tank/ev/media@ingest-S2", "tank/ev/media@resealed-P2026-0001"): _a_gone_b_changed(tmp_path),
    })
    monkeypatch.setattr(zfs, "run_zfs", fake)
    seen = _in_snapshot(tmp_path, "resealed-P2026-0001", "s2/b.MP4", b"b")
    checked = []
    reseal = vault.reseal("P2026-0001", {"media/s1/a.MP4"}.__contains__,
                          lambda rel, path: checked.append((rel, path)) or True)
    assert reseal.snapshot == "tank/ev/media@resealed-P2026-0001"
    assert reseal.older == ("tank/ev/media@ingest-S1", "tank/ev/media@ingest-S2") and reseal.own == ()
    assert checked == [("media/s2/b.MP4", seen)]            # the file that changed, read in the new snapshot
    new = [f"tank/ev/{c}@resealed-P2026-0001" for c in CHILDREN]
    assert fake.changes() == [["zfs", "snapshot", *new], ["zfs", "hold", zfs.HOLD_TAG, *new]]
    diffs = [c[4:] for c in fake.calls if c[1] == "diff"]
    assert diffs == [[f"tank/ev/{c}@{a}", f"tank/ev/{c}@{b}"] for c in ("media", "quarantine")
                     for a, b in (("ingest-S1", "ingest-S2"), ("ingest-S2", "resealed-P2026-0001"))]

    fake.calls.clear()
    retired = vault.retire(list(reseal.older))
    old = [f"tank/ev/{c}@{n}" for n in ("ingest-S1", "ingest-S2") for c in CHILDREN]
    assert sorted(retired) == sorted(old)
    assert fake.changes()[0] == ["zfs", "release", zfs.HOLD_TAG, *old]
    assert sorted(c[3] for c in fake.changes()[1:]) == sorted(old)   # zfs destroy -d each
    assert "tank/ev/media@ab-20261101" not in str(fake.changes())      # zfs-autobackup's is not ours


def test_a_file_gone_without_a_purge_or_changed_keeps_the_old_snapshots(monkeypatch, vault, tmp_path):
    fake = FakeZfs({("tank/ev/media@ingest-S2", "tank/ev/media@resealed-P2026-0002"): _a_gone_b_changed(tmp_path)})
    monkeypatch.setattr(zfs, "run_zfs", fake)
    _in_snapshot(tmp_path, "resealed-P2026-0002", "s2/b.MP4", b"tampered")
    with pytest.raises(VaultError) as refused:
        vault.reseal("P2026-0002", lambda rel: False, lambda rel, path: False)
    text = str(refused.value)
    assert "the held snapshots stay" in text
    assert "media/s1/a.MP4: removed, but no approved purge removed it" in text
    assert "media/s2/b.MP4: changed since it was sealed and no longer has its catalogued hash" in text
    assert not any(c[1] in ("release", "destroy") for c in fake.calls)


def test_nothing_held_means_no_reseal(monkeypatch, vault):
    fake = FakeZfs({})
    fake.snapshots = []
    monkeypatch.setattr(zfs, "run_zfs", fake)
    assert vault.reseal("P2026-0003", lambda rel: True, lambda rel, path: True) is None
    assert fake.changes() == []
