"""Replication to headquarters on the health page and in /api/v1/health."""

import time

from appliance.vault.replication import ReplicationStatus


class FakeReplicator:
    """Stands in for appliance.vault.replication.Replicator (the web page only reads its status)."""

    def __init__(self, status: ReplicationStatus) -> None:
        self.status = status
        self.reloads = 0

    def reload(self) -> None:
        self.reloads += 1


async def test_health_shows_replication_off_by_default(web):
    anon = await web.anon()
    resp = await anon.get("/api/v1/health")
    assert (await resp.json())["replication"] == {"enabled": False}
    legal = await web.login("legal")
    page = await (await legal.get("/health")).text()
    assert "同步到总部" not in page


async def test_health_shows_a_failed_replication_and_its_lag(web):
    now = time.time()
    status = ReplicationStatus(
        enabled=True, target="zrecv-st01@hq:22/hq/stations/st01", state="failed", run_id=4,
        finished_at=now - 60, last_success_at=now - 7200, last_error="ssh: connect to host hq port 22: "
        "Connection refused", last_error_kind="unreachable", last_error_at=now - 60, pending_ingest=2,
        oldest_pending_at=now - 3600, datasets_behind=1, gaps=["hq/stations/st01/media@ingest-X"],
        warnings=["the station clock is 86400 s behind its newest snapshot's creation time: check NTP"])
    fake = FakeReplicator(status)
    web.appliance.replicator = fake
    anon = await web.anon()
    api = await (await anon.get("/api/v1/health")).json()
    rep = api["replication"]
    assert rep["enabled"] and rep["state"] == "failed" and rep["last_error_kind"] == "unreachable"
    assert 3590 <= rep["lag_seconds"] <= 3700 and rep["pending_ingest"] == 2 and rep["datasets_behind"] == 1
    assert rep["missing_at_hq"] == ["hq/stations/st01/media@ingest-X"]
    assert fake.reloads == 1  # a run made by `appliance replicate --now` is seen at once
    it = await web.login("it_admin")
    page = await (await it.get("/health")).text()
    assert "同步到总部" in page and "失败" in page and "Connection refused" in page and "[unreachable]" in page
    assert "2 个采集批次快照未到总部" in page and "the station clock is" in page
    assert "hq/stations/st01/media@ingest-X" in page
