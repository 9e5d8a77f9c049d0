"""The pages at work, against a real appliance with really ingested recordings."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from pathlib import Path

import pytest

from appliance.catalog import audit
from appliance.web import i18n
from tests.dock.test_session import camera
from tests.web.support import PASSWORD, login, token

TEMPLATES = Path(__file__).parents[2] / "appliance" / "web" / "templates"


async def _ingest(web, tmp_path, serial="CAM001", name="cam"):
    web.harness.register(serial, "张伟")
    result = await web.harness.ingest(1, camera(tmp_path / name, serial=serial))
    assert result.result == "done", result.reason
    return web.harness.rows("SELECT * FROM recordings WHERE session_id = ? ORDER BY rel_path",
                            result.session_id)


async def test_search_view_play_and_download_are_audited(web, tmp_path):
    recs = await _ingest(web, tmp_path)
    clip = next(r for r in recs if r["rel_path"].endswith("执法记录_现场检查_0002.MP4"))
    client = await web.login("device_manager")
    officer_id = clip["officer_id"]
    page = await (await client.get(f"/recordings?officer={officer_id}&device=CAM001")).text()
    assert "执法记录_现场检查_0002.MP4" in page and "录音_0001.WAV" in page
    assert "other_0001" not in page
    assert "执法记录_现场检查_0002" in await (await client.get("/recordings?from=2000-01-01&to=2100-01-01")).text()
    assert "执法记录_现场检查_0002" not in await (await client.get("/recordings?from=2001-01-01&to=2001-01-02")).text()
    detail = await client.get(f"/recordings/{clip['id']}")
    html = await detail.text()
    assert clip["sha256"] in html and clip["session_id"] in html and "记录仪时钟偏差" in html
    vault_file = web.appliance.vault.absolute(clip["vault_path"])
    data = vault_file.read_bytes()
    first = await client.get(f"/recordings/{clip['id']}/media", headers={"Range": "bytes=0-"})
    assert first.status == 206 and first.headers["Content-Type"] == "video/mp4"
    assert await first.read() == data
    seek = await client.get(f"/recordings/{clip['id']}/media", headers={"Range": "bytes=1000-1999"})
    assert seek.status == 206 and await seek.read() == data[1000:2000]
    assert seek.headers["Content-Range"] == f"bytes 1000-1999/{len(data)}"
    down = await client.get(f"/recordings/{clip['id']}/media?download=1")
    assert down.status == 200 and hashlib.sha256(await down.read()).hexdigest() == clip["sha256"]
    assert "attachment" in down.headers["Content-Disposition"]
    assert "filename*=UTF-8''" in down.headers["Content-Disposition"]
    rows = web.harness.rows("SELECT action, actor, subject FROM audit_log WHERE subject = ?", str(clip["id"]))
    actions = [r["action"] for r in rows]
    assert actions.count("recording.view") == 1
    assert actions.count("recording.play") == 1        # a seek is the same play
    assert actions.count("recording.download") == 1
    assert all(r["actor"] == "device_manager" for r in rows)
    assert web.harness.rows("SELECT COUNT(*) AS n FROM audit_log WHERE action = 'recording.search'")[0]["n"] >= 3
    assert web.appliance.catalog.run(audit.verify_chain).ok


async def test_cases_categories_and_tags(web, tmp_path):
    recs = await _ingest(web, tmp_path)
    ids = [r["id"] for r in recs]
    client = await web.login("device_manager")
    t = await token(client, "/cases")
    resp = await client.post("/cases", data={"csrf_token": t, "number": "农执〔2026〕12号", "title": "某农资店销售假种子案",
                                             "category": "seizure", "notes": "现场查封"}, allow_redirects=False)
    assert resp.status == 303
    case_url = resp.headers["Location"]
    case_id = int(case_url.rsplit("/", 1)[1])
    dup = await client.post("/cases", data={"csrf_token": t, "number": "农执〔2026〕12号", "title": "again"})
    assert dup.status == 400 and "exists already" in await dup.text()
    tagged = await client.post("/recordings/tag", data=[("csrf_token", t), ("rid", str(ids[0])), ("rid", str(ids[1])),
                                                        ("case", str(case_id)), ("tag", "重点"),
                                                        ("back", "/recordings")], allow_redirects=False)
    assert tagged.status == 303 and tagged.headers["Location"].startswith("/recordings?tagged=")
    case_page = await (await client.get(case_url)).text()
    assert "某农资店销售假种子案" in case_page and "查封扣押" in case_page
    by_case = await (await client.get(f"/recordings?case={case_id}")).text()
    by_category = await (await client.get("/recordings?category=seizure")).text()
    tag_id = web.harness.rows("SELECT id FROM tags WHERE name = '重点'")[0]["id"]
    by_tag = await (await client.get(f"/recordings?tag={tag_id}")).text()
    for html in (by_case, by_category, by_tag):
        assert recs[0]["rel_path"] in html and recs[1]["rel_path"] in html and recs[2]["rel_path"] not in html
    # the category came with the case: article 7 keeps these recordings long-term
    cats = web.harness.rows("SELECT recording_id FROM recording_categories WHERE category = 'seizure'")
    assert sorted(r["recording_id"] for r in cats) == sorted(ids[:2])
    # taking a recording off the case keeps its long-term category
    untag = await client.post(f"/cases/{case_id}/untag", data={"csrf_token": t, "rid": str(ids[0])},
                              allow_redirects=False)
    assert untag.status == 303
    assert len(web.harness.rows("SELECT * FROM recording_categories WHERE recording_id = ?", ids[0])) == 1
    close = await client.post(f"/cases/{case_id}/status", data={"csrf_token": t, "status": "closed"},
                              allow_redirects=False)
    assert close.status == 303
    refused = await client.post("/recordings/tag", data={"csrf_token": t, "rid": str(ids[2]), "case": str(case_id)})
    assert refused.status == 400
    actions = {r["action"] for r in web.harness.rows("SELECT action FROM audit_log")}
    assert {"case.create", "recording.tag", "recording.untag", "case.close"} <= actions
    # the six categories of article 7 are built in
    names = [r["name_zh"] for r in web.harness.rows("SELECT name_zh FROM categories ORDER BY ordinal")]
    assert names == ["群众举报", "案值较大", "涉嫌移送", "查封扣押", "当事人异议", "其他重大复杂"]


async def test_audit_and_health_pages(web, tmp_path):
    await _ingest(web, tmp_path)
    legal = await web.login("legal")
    page = await (await legal.get("/audit?action=session")).text()
    assert "哈希链完整" in page and "session.commit" in page and "recording.view" not in page
    health = await (await legal.get("/health")).text()
    assert "ONLINE" in health and "directory" in health and "0.1.0" in health
    assert (await legal.get(f"/recordings/{web.own}")).status == 403
    web.appliance.catalog.run(lambda c: c.execute("DROP TRIGGER audit_log_no_update"))
    web.appliance.catalog.run(lambda c: c.execute("UPDATE audit_log SET actor = 'x' WHERE seq = 3"))
    broken = await (await legal.get("/audit?check=1")).text()
    assert "哈希链在第 3 条断裂" in broken


async def test_accounts_and_settings_are_audited(web):
    it = await web.login("it_admin")
    t = await token(it, "/admin/users")
    resp = await it.post("/admin/users", data={"csrf_token": t, "name": "wangq", "display_name": "王强",
                                               "role": "officer", "officer": "王强", "password": "a long password"},
                         allow_redirects=False)
    assert resp.status == 303
    assert (await login(await web.anon(), "wangq", "a long password")).status == 303
    no_admin = await it.post("/admin/users", data={"csrf_token": t, "name": "boss", "role": "admin",
                                                   "password": "a long password"})
    assert no_admin.status == 400
    uid = web.harness.rows("SELECT id FROM users WHERE name = 'wangq'")[0]["id"]
    assert (await it.post(f"/admin/users/{uid}", data={"csrf_token": t, "action": "disable"},
                          allow_redirects=False)).status == 303
    assert (await login(await web.anon(), "wangq", "a long password")).status == 401
    bad = await it.post("/admin/settings", data={"csrf_token": t, "session_idle_minutes": "1",
                                                 "login_max_failures": "5", "lockout_minutes": "15",
                                                 "pseudo_drives": "0"})
    assert bad.status == 400
    ok = await it.post("/admin/settings", data={"csrf_token": t, "session_idle_minutes": "60",
                                                "login_max_failures": "4", "lockout_minutes": "10",
                                                "pseudo_drives": "1"}, allow_redirects=False)
    assert ok.status == 303
    changes = web.harness.rows("SELECT subject, details FROM audit_log WHERE action = 'setting.change'")
    assert {c["subject"] for c in changes} == {"session_idle_minutes", "login_max_failures", "lockout_minutes",
                                               "pseudo_drives"}
    actions = [r["action"] for r in web.harness.rows("SELECT action FROM audit_log WHERE actor = 'it_admin'")]
    assert "user.add" in actions and "user.disable" in actions
    assert (await it.get("/recordings")).status == 403      # IT never sees evidence content


async def test_burn_a_case_to_a_pseudo_drive_and_register_the_disc(web, tmp_path):
    recs = await _ingest(web, tmp_path)
    admin = await web.login("admin")
    t = await token(admin, "/admin/settings")
    await admin.post("/admin/settings", data={"csrf_token": t, "session_idle_minutes": "30",
                                              "login_max_failures": "5", "lockout_minutes": "15", "pseudo_drives": "1"})
    dm = await web.login("device_manager")
    t = await token(dm, "/cases")
    resp = await dm.post("/cases", data={"csrf_token": t, "number": "BURN-1", "title": "刻录测试"}, allow_redirects=False)
    case_id = int(resp.headers["Location"].rsplit("/", 1)[1])
    await dm.post("/recordings/tag", data=[("csrf_token", t), ("case", str(case_id))]
                  + [("rid", str(r["id"])) for r in recs])
    assert "stdio:" in await (await dm.get(f"/burn?case={case_id}")).text()
    drive = f"stdio:{web.appliance.config.state_dir}/pseudo-drives/drive-1.iso"
    plan = await dm.post("/burn/plan", data={"csrf_token": t, "case": str(case_id), "medium": "cd", "drive": drive})
    html = await plan.text()
    assert plan.status == 200 and "分盘方案" in html and "1/1" in html
    start = await dm.post("/burn/start", data={"csrf_token": t, "case": str(case_id), "medium": "cd", "drive": drive},
                          allow_redirects=False)
    assert start.status == 303, await start.text()
    job_url = start.headers["Location"]
    job_id = int(job_url.rsplit("/", 1)[1])
    events = await dm.get(f"{job_url}/events")
    states = []
    async with asyncio.timeout(120):
        while True:
            line = (await events.content.readline()).decode()
            if line.startswith("data: "):
                state = json.loads(line[6:])
                states.append((state["state"], state.get("phase")))
                if state["state"] in ("done", "failed"):
                    break
    events.close()
    assert states[-1] == ("done", "verified"), states
    assert ("building", "building") in states   # live progress came (phases are coalesced per event)
    disc = web.harness.rows("SELECT * FROM discs WHERE job_id = ?", job_id)[0]
    assert disc["state"] == "verified" and disc["image_sha256"]
    iso = web.appliance.config.state_dir / "pseudo-discs" / (disc["label"].replace("/", "of") + ".iso")
    assert iso.exists() and hashlib.sha256(iso.read_bytes()[:disc["image_bytes"]]).hexdigest() == disc["image_sha256"]
    register = await (await dm.get("/discs")).text()
    assert disc["label"] in register and "已校验" in register
    rec_page = await (await dm.get(f"/recordings/{recs[0]['id']}")).text()
    assert disc["label"] in rec_page
    form = await dm.get(f"/discs/{disc['id']}/form")
    assert form.status == 200 and "同步录音录像摄录情况记录表" in await form.text()
    pdf = await dm.get(f"/discs/{disc['id']}/form?format=pdf")
    assert pdf.status == 200 and (await pdf.read()).startswith(b"%PDF")
    actions = [r["action"] for r in web.harness.rows("SELECT action FROM audit_log")]
    assert "burn.start" in actions and "disc.verified" in actions and "burn.done" in actions
    assert web.appliance.catalog.run(audit.verify_chain).ok


async def test_the_board_streams_slot_changes(web, tmp_path):
    client = await web.anon()
    web.harness.register("CAM777", "赵磊")
    src = camera(tmp_path / "cam7", serial="CAM777")
    resp = await client.get("/board/events")
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    seen = []

    async def read():
        while True:
            line = (await resp.content.readline()).decode()
            if line.startswith("data: "):
                data = json.loads(line[6:])
                tiles = data["slots"] if "slots" in data else [data]
                for tile in tiles:
                    if tile["slot"] == "3":
                        seen.append((tile["state"], tile.get("officer")))
                        assert "files" not in tile and "session_id" not in tile
                if ("done", "赵磊") in seen:
                    return

    reader = asyncio.create_task(read())
    await asyncio.sleep(0.1)
    web.harness.dock(3, src)
    async with asyncio.timeout(60):
        await reader
    resp.close()
    assert seen[0] == ("empty", None) and ("copying", "赵磊") in seen


async def test_language_switch_and_every_key_translated(web):
    used = set()
    for path in TEMPLATES.glob("*.html"):
        used |= set(re.findall(r"t\('([a-z_.0-9]+)'", path.read_text()))
    missing = sorted(k for k in used if not k.endswith(".") and k not in i18n.MESSAGES)
    assert not missing, missing
    # keys made in templates from a prefix and a value: every value has its words
    from typing import get_args

    from appliance.burner.model import BurnPhase
    from appliance.catalog.users import ROLES
    from appliance.web.security import SETTINGS_DEFAULTS
    dynamic = ([f"role.{r}" for r in ROLES] + [f"role.{r}.desc" for r in ROLES]
               + [f"settings.{k}" for k in SETTINGS_DEFAULTS] + [f"settings.{k}.help" for k in SETTINGS_DEFAULTS]
               + [f"burn.phase.{p}" for p in get_args(BurnPhase)] + ["burn.phase.building"]
               + [f"disc.state.{s}" for s in ("planned", "building", "burning", "written", "verified", "failed")]
               + [f"case.status.{s}" for s in ("open", "closed")])
    assert not [k for k in dynamic if k not in i18n.MESSAGES]
    assert all(len(v) == 2 and all(v) for v in i18n.MESSAGES.values())
    client = await web.anon()
    zh = await (await client.get("/login")).text()
    assert "用户名" in zh and 'lang="zh-CN"' in zh
    await client.get("/lang/en?next=/login")
    en = await (await client.get("/login")).text()
    assert "User name" in en and 'lang="en"' in en and "用户名" not in en


@pytest.mark.parametrize("role", ["device_manager", "leader", "bureau_head", "legal", "it_admin", "admin", "officer"])
async def test_every_page_a_role_may_open_renders(web, role):
    from appliance.web.access import may
    from appliance.web.routes import ROUTES
    from tests.web.test_security import concrete

    client = await web.login(role)
    for route in ROUTES:
        if route.method != "GET" or "{" in route.path and "rid" not in route.path or route.path.endswith("events") \
                or route.path.endswith("/media") or not may(route.access, role):
            continue
        resp = await client.get(concrete(route.path, web.own), headers={"Accept": "text/html"})
        assert resp.status == 200, (role, route.path, resp.status)
    assert PASSWORD
