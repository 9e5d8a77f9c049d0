"""Retention (art. 7, six-month minimum): the only way evidence is ever deleted.

On a real appliance with really ingested recordings (aged by moving their ingest time
back): long-term categories, open cases and pending releases are never candidates; a list
needs a leader who did not propose it; carrying it out checks every item again, writes one
audit row per file and deletes exactly those files from the directory vault; the database
itself refuses a purge outside those rules; a ZFS snapshot is released and destroyed only
when no recording of its session is left. A property-based test drives random sequences of
tagging, untagging, case closing and purge approval against the rules.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from appliance.catalog import approvals, audit, cases, registry, releases, retention
from appliance.catalog.db import Catalog
from appliance.config import parse_config
from appliance.errors import VaultError
from appliance.timeutil import iso, utcnow
from appliance.vault.base import Reseal, open_folders
from appliance.vault.directory import DirectoryVault
from appliance.vault.verify import verify_vault
from appliance.vault import zfs
from tests.dock.test_session import camera

OLD = datetime(2025, 3, 1, 9, 0, tzinfo=timezone.utc)
FILES = [f"DCIM/100/clip_{n:04d}.MP4" for n in range(1, 7)]


async def _old_recordings(harness, tmp_path, serial="CAM001", files=FILES, slot=1):
    """Ingest a camera whose clips were recorded in March 2025, and pretend the ingest was
    eight months ago too; returns {file name: recording row}."""
    if harness.catalog.run(registry.get_device, serial) is None:
        harness.register(serial)
    src = camera(tmp_path / f"cam-{serial}-{slot}", serial=serial, files={f: os.urandom(30_000) for f in files})
    for f in files:
        os.utime(src / f, (OLD.timestamp(), OLD.timestamp()))
    result = await harness.ingest(slot, src)
    assert result.result == "done", result.reason
    eight_months = iso(utcnow() - timedelta(days=240))
    harness.catalog.run(lambda c: c.execute("UPDATE recordings SET ingested_at = ? WHERE session_id = ?",
                                            (eight_months, result.session_id)))
    return {r["rel_path"]: r for r in harness.rows("SELECT * FROM recordings WHERE session_id = ?",
                                                  result.session_id)}


def _case(catalog, number, category=None):
    return catalog.run(cases.create_case, number, "案件", category=category, actor="dm").id


async def test_candidates_leave_out_long_term_open_cases_releases_and_young_recordings(harness, tmp_path):
    recs = await _old_recordings(harness, tmp_path)
    c = harness.catalog
    ids = {name.rsplit("_", 1)[1][:4]: r["id"] for name, r in recs.items()}
    open_case, closed_case = _case(c, "OPEN-1"), _case(c, "CLOSED-1")
    c.run(cases.tag_recordings, [ids["0001"]], actor="dm", category="seizure")          # long-term
    c.run(cases.tag_recordings, [ids["0002"]], actor="dm", case_id=open_case)           # open case
    c.run(cases.tag_recordings, [ids["0003"]], actor="dm", case_id=closed_case)         # closed: may go
    c.run(cases.set_case_status, closed_case, "closed", actor="dm")
    c.run(releases.create, [ids["0004"]], purpose="party", recipient="当事人", reason="申请",
          actor="dm", cleared=frozenset())                                             # pending release
    found = c.run(retention.candidates, now=utcnow(), months=6)
    assert sorted(r["id"] for r in found) == sorted([ids["0003"], ids["0005"], ids["0006"]])
    assert c.run(retention.candidates, now=utcnow(), months=12) == []                  # younger than 12 months
    with pytest.raises(approvals.ApprovalError, match="at least 6 months"):
        c.run(retention.candidates, now=utcnow(), months=5)
    counts = c.run(retention.protected_counts)
    assert list(counts.values()) == [1, 1, 1, 0]


async def test_a_purge_list_is_approved_by_another_leader_and_deletes_only_its_files(harness, tmp_path):
    recs = await _old_recordings(harness, tmp_path)
    keep = await _old_recordings(harness, tmp_path, serial="CAM002", files=["DCIM/keep_0001.MP4"], slot=2)
    c, vault = harness.catalog, harness.appliance.vault
    long_term = recs[FILES[0]]["id"]
    c.run(cases.tag_recordings, [long_term], actor="dm", category="public_report")
    c.run(cases.tag_recordings, [keep["DCIM/keep_0001.MP4"]["id"]], actor="dm", case_id=_case(c, "OPEN-2"))
    list_id = c.run(retention.propose, now=utcnow(), months=6, actor="device_manager")
    listed = {i["recording_id"] for i in c.run(retention.items, list_id)}
    assert listed == {recs[f]["id"] for f in FILES[1:]}
    # nothing is deleted before a decision, and the proposer cannot decide
    with pytest.raises(approvals.ApprovalError, match="not approved"):
        retention.carry_out(c, vault, list_id, actor="device_manager")
    with pytest.raises(approvals.SelfApproval):
        c.run(retention.decide, list_id, actor="Device_Manager", approve=True, reason="到期")
    assert c.run(retention.get, list_id)["state"] == "pending"
    with pytest.raises(approvals.ApprovalError, match="reason"):
        c.run(retention.decide, list_id, actor="leader", approve=True, reason="  ")
    c.run(retention.decide, list_id, actor="leader", approve=True, reason="已过保存期限，经审核同意清理")
    with pytest.raises(approvals.ApprovalError, match="already approved"):
        c.run(retention.decide, list_id, actor="bureau_head", approve=False, reason="x")
    # between approval and execution one recording becomes evidence of a long-term case
    late = recs[FILES[1]]["id"]
    c.run(cases.tag_recordings, [late], actor="dm", category="transfer")
    result = retention.carry_out(c, vault, list_id, actor="device_manager")
    purged = {recs[f]["id"] for f in FILES[2:]}
    assert result.purged == len(purged) == result.removed and result.kept == [(late, "long-term category (art. 7)")]
    for name, r in recs.items():
        assert vault.absolute(r["vault_path"]).exists() == (r["id"] not in purged), name
    assert vault.absolute(keep["DCIM/keep_0001.MP4"]["vault_path"]).exists()
    rows = harness.rows("SELECT subject, actor, details FROM audit_log WHERE action = 'recording.purge'")
    assert sorted(int(r["subject"]) for r in rows) == sorted(purged)          # one audit row per file
    assert all(r["actor"] == "device_manager" and '"approved_by": "leader"' in r["details"] for r in rows)
    assert [r["subject"] for r in harness.rows("SELECT subject FROM audit_log WHERE action = 'purge.kept'")] == [str(late)]
    state = c.run(retention.get, list_id)
    assert (state["state"], state["purged"], state["kept"]) == ("done", 4, 1)
    # the rows stay, marked; verify knows the files are gone on purpose
    gone = harness.rows("SELECT purged_at, purged_by, purge_list_id FROM recordings WHERE purged_at IS NOT NULL")
    assert len(gone) == 4 and all(g["purge_list_id"] == list_id for g in gone)
    report = await asyncio_to_thread(verify_vault, c, vault)
    assert report.ok, report.problems
    assert c.run(audit.verify_chain).ok


async def asyncio_to_thread(fn, *args):
    import asyncio
    return await asyncio.to_thread(fn, *args)


async def test_a_refused_list_purges_nothing(harness, tmp_path):
    recs = await _old_recordings(harness, tmp_path)
    c = harness.catalog
    list_id = c.run(retention.propose, now=utcnow(), months=6, actor="device_manager")
    c.run(retention.decide, list_id, actor="leader", approve=False, reason="案件复查中，暂不清理")
    with pytest.raises(approvals.ApprovalError, match="not approved"):
        retention.carry_out(c, harness.appliance.vault, list_id, actor="device_manager")
    assert all(harness.appliance.vault.absolute(r["vault_path"]).exists() for r in recs.values())
    assert harness.rows("SELECT COUNT(*) AS n FROM recordings WHERE purged_at IS NOT NULL")[0]["n"] == 0
    # a new list may be proposed once the last one is decided
    assert c.run(retention.propose, now=utcnow(), months=6, actor="device_manager") != list_id


async def test_the_database_refuses_purges_outside_the_rules(harness, tmp_path):
    recs = await _old_recordings(harness, tmp_path)
    c = harness.catalog
    a, b = recs[FILES[0]]["id"], recs[FILES[1]]["id"]
    c.run(cases.tag_recordings, [a], actor="dm", category="large_value")
    list_id = c.run(retention.propose, now=utcnow(), months=6, actor="device_manager")
    now = iso(utcnow())
    with pytest.raises(sqlite3.IntegrityError, match="may not be purged"):   # not approved yet
        c.run(lambda x: x.execute("UPDATE recordings SET purged_at = ?, purge_list_id = ? WHERE id = ?",
                                  (now, list_id, b)))
    c.run(retention.decide, list_id, actor="leader", approve=True, reason="同意")
    with pytest.raises(sqlite3.IntegrityError, match="may not be purged"):   # long-term, even with a list
        c.run(lambda x: x.execute("UPDATE recordings SET purged_at = ?, purge_list_id = ? WHERE id = ?",
                                  (now, list_id, a)))
    with pytest.raises(sqlite3.IntegrityError, match="never deleted"):
        c.run(lambda x: x.execute("DELETE FROM recordings WHERE id = ?", (b,)))
    with pytest.raises(sqlite3.IntegrityError, match="own request"):
        c.run(lambda x: x.execute("UPDATE purge_lists SET decided_by = requested_by WHERE id = ?", (list_id,)))
    retention.carry_out(c, harness.appliance.vault, list_id, actor="device_manager")
    with pytest.raises(sqlite3.IntegrityError, match="stays purged"):
        c.run(lambda x: x.execute("UPDATE recordings SET purged_at = NULL WHERE id = ?", (b,)))
    with pytest.raises(cases.CaseError, match="purged"):
        c.run(cases.tag_recordings, [b], actor="dm", tag="x")


async def test_the_vault_deletes_only_inside_media_and_quarantine(harness):
    vault = harness.appliance.vault
    with pytest.raises(VaultError):
        vault.remove_purged("catalog/catalog.sqlite")
    with pytest.raises(VaultError):
        vault.remove_purged("../../etc/passwd")
    assert vault.remove_purged("media/2025/no/such/file.MP4") is False


class SnapshotVault(DirectoryVault):
    """A directory vault that remembers which sessions' snapshots it was asked to release."""

    released: list[str]

    def release_snapshot(self, session_id: str) -> list[str]:
        self.released.append(session_id)
        return [f"tank/ev/media@ingest-{session_id}"]


async def test_a_session_not_yet_at_hq_is_kept_and_purged_by_a_later_list_once_it_arrived(harness, tmp_path):
    arrived = await _old_recordings(harness, tmp_path, files=FILES[:2])
    waiting = await _old_recordings(harness, tmp_path, serial="CAM002", files=FILES[2:4], slot=2)
    c, vault = harness.catalog, harness.appliance.vault
    c.run(lambda x: x.execute("UPDATE sessions SET snapshot = 'tank/ev/media@ingest-' || id"))
    at_hq = {f"tank/ev/media@ingest-{arrived[FILES[0]]['session_id']}"}

    def purge(waits_for_hq):
        list_id = c.run(retention.propose, now=utcnow(), months=6, actor="device_manager")
        c.run(retention.decide, list_id, actor="leader", approve=True, reason="同意")
        return retention.carry_out(c, vault, list_id, actor="device_manager", waits_for_hq=waits_for_hq)

    first = purge(lambda snapshot: snapshot not in at_hq)
    assert sorted(first.kept) == sorted((r["id"], retention.NOT_AT_HQ) for r in waiting.values())
    assert first.purged == first.removed == 2
    assert all(vault.absolute(r["vault_path"]).exists() for r in waiting.values())
    assert not any(vault.absolute(r["vault_path"]).exists() for r in arrived.values())
    notes = {r["details"] for r in harness.rows("SELECT details FROM audit_log WHERE action = 'purge.kept'")}
    assert len(notes) == 2 and all(retention.NOT_AT_HQ in n for n in notes)

    at_hq.add(f"tank/ev/media@ingest-{waiting[FILES[2]]['session_id']}")   # the next run sent it
    second = purge(lambda snapshot: snapshot not in at_hq)
    assert second.purged == second.removed == 2 and not second.kept
    assert not any(vault.absolute(r["vault_path"]).exists() for r in waiting.values())


async def test_a_snapshot_expires_only_when_no_recording_of_its_session_is_left(harness, tmp_path):
    first = await _old_recordings(harness, tmp_path, files=FILES[:2])
    second = await _old_recordings(harness, tmp_path, serial="CAM002", files=FILES[2:4], slot=2)
    c = harness.catalog
    c.run(lambda x: x.execute("UPDATE sessions SET snapshot = 'tank/ev/media@ingest-' || id"))
    c.run(cases.tag_recordings, [second[FILES[2]]["id"]], actor="dm", category="seizure")   # one stays
    vault = SnapshotVault(harness.appliance.config)
    vault.released = []
    list_id = c.run(retention.propose, now=utcnow(), months=6, actor="device_manager")
    c.run(retention.decide, list_id, actor="leader", approve=True, reason="同意")
    result = retention.carry_out(c, vault, list_id, actor="device_manager")
    first_session = first[FILES[0]]["session_id"]
    assert vault.released == [first_session] and result.snapshots == [f"tank/ev/media@ingest-{first_session}"]
    expired = harness.rows("SELECT id FROM sessions WHERE snapshot_released_at IS NOT NULL")
    assert [r["id"] for r in expired] == [first_session]
    assert [r["subject"] for r in harness.rows("SELECT subject FROM audit_log WHERE action = 'snapshot.expire'")] \
        == [first_session]


class ResealingVault(SnapshotVault):
    """A directory vault that answers a reseal as the zfs one would, or refuses it."""

    snapshots = True
    refuse: str | None = None

    def reseal(self, tag, purged, same):
        if self.refuse:
            raise VaultError(self.refuse)
        self.asked = (tag, purged, same)
        return Reseal(f"tank/ev/media@resealed-{tag}", tuple(self.older),
                      tuple(s for s in self.older if "@resealed-" in s))

    def retire(self, snapshots):
        self.retired = list(snapshots)
        return snapshots


async def test_after_a_purge_one_snapshot_stands_in_for_the_held_ones_of_the_sessions_kept(harness, tmp_path):
    gone = await _old_recordings(harness, tmp_path, files=FILES[:2])
    kept = await _old_recordings(harness, tmp_path, serial="CAM002", files=FILES[2:4], slot=2)
    c = harness.catalog
    c.run(lambda x: x.execute("UPDATE sessions SET snapshot = 'tank/ev/media@ingest-' || id"))
    c.run(cases.tag_recordings, [r["id"] for r in kept.values()], actor="dm", category="seizure")
    vault = ResealingVault(harness.appliance.config)
    vault.released = []
    gone_sid, kept_sid = gone[FILES[0]]["session_id"], kept[FILES[2]]["session_id"]
    vault.older = [f"tank/ev/media@ingest-{kept_sid}", "tank/ev/media@ingest-SEALED-WHILE-PURGING",
                   "tank/ev/media@resealed-P2025-0009"]
    list_id = c.run(retention.propose, now=utcnow(), months=6, actor="device_manager")
    c.run(retention.decide, list_id, actor="leader", approve=True, reason="同意")
    result = retention.carry_out(c, vault, list_id, actor="device_manager")

    number = c.run(retention.get, list_id)["number"]
    assert result.resealed == f"tank/ev/media@resealed-{number}" and result.reseal_problem is None
    # a session that does not refer to its snapshot yet keeps it; an earlier reseal goes
    assert vault.retired == [f"tank/ev/media@ingest-{kept_sid}", "tank/ev/media@resealed-P2025-0009"]
    rows = {r["id"]: r for r in harness.rows("SELECT id, snapshot, snapshot_released_at FROM sessions")}
    assert rows[kept_sid]["snapshot"] == result.resealed and rows[kept_sid]["snapshot_released_at"] is None
    assert rows[gone_sid]["snapshot_released_at"] and rows[gone_sid]["snapshot"] == f"tank/ev/media@ingest-{gone_sid}"
    (row,) = harness.rows("SELECT details FROM audit_log WHERE action = 'snapshot.reseal'")
    assert '"sessions": 1' in row["details"] and '"retired_count": 2' in row["details"]
    # what the vault was given to judge the changes with
    _tag, purged, same = vault.asked
    assert all(purged(r["vault_path"]) for r in gone.values()) and not purged(kept[FILES[2]]["vault_path"])
    live = harness.appliance.vault
    rec = kept[FILES[2]]
    assert same(rec["vault_path"], live.absolute(rec["vault_path"]))
    assert not same(rec["vault_path"], live.absolute(kept[FILES[3]]["vault_path"]))  # other bytes
    manifest = f"{harness.rows('SELECT vault_dir FROM sessions WHERE id = ?', kept_sid)[0]['vault_dir']}/manifest.json"
    assert same(manifest, live.absolute(manifest))
    assert not same("media/not-catalogued.MP4", live.absolute(rec["vault_path"]))


async def test_a_refused_reseal_keeps_the_snapshots_and_is_audited(harness, tmp_path):
    await _old_recordings(harness, tmp_path, files=FILES[:2])
    kept = await _old_recordings(harness, tmp_path, serial="CAM002", files=FILES[2:4], slot=2)
    c = harness.catalog
    c.run(lambda x: x.execute("UPDATE sessions SET snapshot = 'tank/ev/media@ingest-' || id"))
    c.run(cases.tag_recordings, [r["id"] for r in kept.values()], actor="dm", category="seizure")
    vault = ResealingVault(harness.appliance.config)
    vault.released, vault.refuse = [], "the held snapshots stay: media/x.MP4: renamed to media/y.MP4"
    list_id = c.run(retention.propose, now=utcnow(), months=6, actor="device_manager")
    c.run(retention.decide, list_id, actor="leader", approve=True, reason="同意")
    result = retention.carry_out(c, vault, list_id, actor="device_manager")
    assert result.purged == 2 and result.resealed is None and "renamed" in result.reseal_problem
    kept_sid = kept[FILES[2]]["session_id"]
    assert harness.rows("SELECT snapshot FROM sessions WHERE id = ?", kept_sid)[0]["snapshot"] == \
        f"tank/ev/media@ingest-{kept_sid}"
    (row,) = harness.rows("SELECT details FROM audit_log WHERE action = 'snapshot.reseal-refused'")
    assert "renamed to media/y.MP4" in row["details"]
    assert c.run(retention.get, list_id)["state"] == "done"


def test_zfs_releases_the_hold_and_destroys_only_that_sessions_snapshots(monkeypatch, tmp_path):
    calls = []
    snaps = ["tank/ev/media@ingest-S1", "tank/ev/quarantine@ingest-S1", "tank/ev/catalog@ingest-S1"]

    def fake(argv, *, readonly, ok_codes=(0,)):
        calls.append((argv, readonly))
        if argv[:2] == ["zfs", "list"]:
            return "\n".join(snaps[:1] + snaps[2:]) + "\n"      # the quarantine one was never made
        if argv[:2] == ["zfs", "holds"]:
            return "".join(f"{s}\t{zfs.HOLD_TAG}\tWed Nov 27 2026\n" for s in argv[3:])
        return ""

    monkeypatch.setattr(zfs, "run_zfs", fake)
    config = parse_config({"vault": {"backend": "zfs", "dataset": "tank/ev", "path": str(tmp_path)},
                           "station": {"id": "st1"}})
    released = zfs.ZfsVault(config).release_snapshot("S1")
    assert released == [snaps[0], snaps[2]]
    changes = [argv for argv, readonly in calls if not readonly]
    assert changes == [["zfs", "release", zfs.HOLD_TAG, snaps[0], snaps[2]],
                       ["zfs", "destroy", "-d", snaps[0]], ["zfs", "destroy", "-d", snaps[2]]]


# -- property: no sequence of steps purges a protected recording ----------------------------

class RetentionRules(RuleBasedStateMachine):
    """Random tagging, untagging, case closing and reopening, proposals, decisions and purges on
    a catalog of aged recordings: a recording in a long-term category, or on a case that is not
    closed at the moment of the purge, is never purged, and only approved lists purge."""

    N = 8

    @initialize()
    def setup(self):
        self.tmp = tempfile.TemporaryDirectory()
        root = Path(self.tmp.name)
        config = parse_config({"state_dir": str(root / "state"), "vault": {"path": str(root / "vault")}})
        self.vault = DirectoryVault(config)
        self.vault.prepare()
        self.catalog = Catalog(root / "vault" / "catalog" / "catalog.sqlite")
        self.catalog.run(registry.add_device, "P1", officer="张伟")
        old = iso(utcnow() - timedelta(days=400))

        def seed(conn):
            conn.execute("INSERT INTO sessions (id, device_serial, slot, profile, state, vault_dir, started_at,"
                         " updated_at) VALUES ('S', 'P1', '1', 'generic', 'done', 'media/s', ?, ?)", (old, old))
            for n in range(self.N):
                rel = f"media/s/files/c{n}.mp4"
                path = self.vault.root / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"x")
                conn.execute("INSERT INTO recordings (session_id, device_serial, rel_path_raw, rel_path, vault_path,"
                             " size, mtime_ns, camera_mtime, sha256, ingested_at) VALUES"
                             " ('S', 'P1', ?, ?, ?, 1, 0, ?, '0', ?)", (rel.encode(), rel, rel, old, old))
        self.catalog.run(seed)
        self.cases = [self.catalog.run(cases.create_case, f"C{n}", "c", category=cat_, actor="dm").id
                      for n, cat_ in enumerate((None, None, "major"))]
        self.list_id = None

    def teardown(self):
        self.catalog.close()
        open_folders(Path(self.tmp.name))
        self.tmp.cleanup()

    def _rid(self, n):
        return n + 1

    @rule(n=st.integers(0, N - 1), c=st.integers(0, 2))
    def tag_case(self, n, c):
        try:
            self.catalog.run(cases.tag_recordings, [self._rid(n)], actor="dm", case_id=self.cases[c])
        except cases.CaseError:
            pass   # closed case, or the recording is purged

    @rule(n=st.integers(0, N - 1), key=st.sampled_from(["seizure", "objection"]))
    def tag_category(self, n, key):
        try:
            self.catalog.run(cases.tag_recordings, [self._rid(n)], actor="dm", category=key)
        except cases.CaseError:
            pass

    @rule(n=st.integers(0, N - 1), c=st.integers(0, 2))
    def untag(self, n, c):
        try:
            self.catalog.run(cases.untag_case, self.cases[c], self._rid(n), actor="dm")
        except cases.CaseError:
            pass

    @rule(c=st.integers(0, 2), closed=st.booleans())
    def case_status(self, c, closed):
        self.catalog.run(cases.set_case_status, self.cases[c], "closed" if closed else "open", actor="dm")

    @rule()
    def propose(self):
        try:
            self.list_id = self.catalog.run(retention.propose, now=utcnow(), months=6, actor="dm")
        except approvals.ApprovalError:
            pass

    @precondition(lambda self: self.list_id is not None)
    @rule(approve=st.booleans(), by=st.sampled_from(["dm", "leader"]))
    def decide(self, approve, by):
        try:
            self.catalog.run(retention.decide, self.list_id, actor=by, approve=approve, reason="r")
        except approvals.ApprovalError:
            pass

    @precondition(lambda self: self.list_id is not None)
    @rule()
    def purge(self):
        def protected(conn):
            return {r[0] for r in conn.execute(
                "SELECT recording_id FROM recording_categories UNION"
                " SELECT x.recording_id FROM recording_cases x JOIN cases c ON c.id = x.case_id"
                " WHERE c.status != 'closed' OR c.category IS NOT NULL")}
        before = self.catalog.run(protected)
        state = self.catalog.run(retention.get, self.list_id)["state"]
        already = self._purged()
        try:
            retention.carry_out(self.catalog, self.vault, self.list_id, actor="dm")
        except approvals.ApprovalError:
            assert state not in ("approved", "executing")
            assert self._purged() == already
            return
        assert state in ("approved", "executing")
        newly = self._purged() - already
        assert not newly & before, (newly, before)
        decided = self.catalog.run(retention.get, self.list_id)
        assert decided["decided_by"] == "leader"      # never the proposer

    def _purged(self):
        return {r[0] for r in self.catalog.run(lambda c: c.execute(
            "SELECT id FROM recordings WHERE purged_at IS NOT NULL").fetchall())}

    @invariant()
    def files_follow_the_catalog(self):
        if not hasattr(self, "catalog"):
            return
        for rid, path, purged in self.catalog.run(lambda c: c.execute(
                "SELECT id, vault_path, purged_at FROM recordings").fetchall()):
            assert (self.vault.root / path).exists() == (purged is None), rid


RetentionRules.TestCase.settings = settings(max_examples=40, stateful_step_count=25, deadline=None,
                                            suppress_health_check=[HealthCheck.too_slow])
test_no_sequence_of_steps_purges_a_protected_recording = RetentionRules.TestCase
