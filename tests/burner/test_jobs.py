"""Burn jobs in the catalog: what a restart in the middle of a burn leaves behind."""

from appliance.burner.jobs import INTERRUPTED, BurnService, _set_disc, _set_job, record_job, selection
from appliance.catalog import audit
from appliance.daemon import Appliance
from appliance.vault.base import open_folders
from tests.support.appliance import make_config
from tests.web.support import seed_recording, start_web


async def test_a_burn_cut_off_by_a_restart_is_failed_and_its_image_removed(tmp_path):
    config = make_config(tmp_path)
    first = Appliance(config)
    await first.start(udev=False, web_listener=False)
    try:
        rids = [seed_recording(first, name=f"DCIM/片段_{n}.MP4") for n in range(2)]
        recs = first.catalog.run(selection, first.vault.root, case_id=None, recording_ids=rids)
        plan = BurnService(first).plan(recs, "cd", serial=1)
        job_id, disc_ids = first.catalog.run(record_job, plan, case_id=None, drive="/dev/sr0", actor="dm")
        (did,) = disc_ids.values()
        first.catalog.run(_set_job, job_id, "dm (burn)", "running")
        first.catalog.run(_set_disc, did, "dm (burn)", "burning")
        image = first.vault.discs / "half-built.iso"
        image.write_bytes(b"\0" * 4096)
    finally:
        await first.stop()  # as after a power cut: nothing ran the job to its end

    second = Appliance(config)
    await second.start(udev=False, web_listener=False)
    env = await start_web(second)  # the web page's start-up recovers the burner
    try:
        job = second.catalog.run(lambda c: dict(c.execute("SELECT * FROM burn_jobs").fetchone()))
        disc = second.catalog.run(lambda c: dict(c.execute("SELECT * FROM discs").fetchone()))
        assert job["state"] == "failed" and job["error"] == INTERRUPTED and job["finished_at"]
        assert disc["state"] == "failed" and disc["error"] == INTERRUPTED
        assert not image.exists()
        actions = second.catalog.run(lambda c: [r[0] for r in c.execute("SELECT action FROM audit_log")])
        assert actions[-2:] == ["disc.failed", "burn.failed"]
        assert second.catalog.run(audit.verify_chain).ok
    finally:
        await env.server.close()
        await second.stop()
        open_folders(tmp_path)


async def test_finished_jobs_are_left_alone_at_start_up(tmp_path):
    appliance = Appliance(make_config(tmp_path))
    await appliance.start(udev=False, web_listener=False)
    try:
        rid = seed_recording(appliance)
        recs = appliance.catalog.run(selection, appliance.vault.root, case_id=None, recording_ids=[rid])
        plan = BurnService(appliance).plan(recs, "cd", serial=1)
        job_id, disc_ids = appliance.catalog.run(record_job, plan, case_id=None, drive="/dev/sr0", actor="dm")
        appliance.catalog.run(_set_disc, next(iter(disc_ids.values())), "dm (burn)", "verified")
        appliance.catalog.run(_set_job, job_id, "dm (burn)", "done")
        await BurnService(appliance).recover()
        job = appliance.catalog.run(lambda c: dict(c.execute("SELECT state, error FROM burn_jobs").fetchone()))
        assert job == {"state": "done", "error": None}
    finally:
        await appliance.stop()
        open_folders(tmp_path)
