"""The regulation's workflows through the web page, on a real appliance with really ingested
recordings: the device registry and its deadlines, the exception register, release approval
and export, judicial access and its register, confidentiality marks, retention purges,
continuity reviews and the supervision report. Each: the happy path, the refusals (wrong
role, missing approval, the requester deciding their own request) and the audit rows.
(That every route refuses the roles the route table does not name is generated in
test_security.py.)"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import os
import re
import zipfile
from datetime import datetime, timedelta, timezone


from appliance.catalog import audit, continuity, registry
from appliance.catalog import sessions as cat
from appliance.catalog import users
from appliance.timeutil import iso, utcnow
from tests.dock.test_session import camera
from tests.web.support import _HASH, token

OLD = datetime(2025, 3, 1, 9, 0, tzinfo=timezone.utc)


async def ingest(web, tmp_path, serial="CAM001", officer="张伟", files=None, slot=1, old=False):
    """Dock a camera folder; return its recordings {name: row}."""
    if web.appliance.catalog.run(registry.get_device, serial) is None:
        web.harness.register(serial, officer)
    files = files or {f"DCIM/{serial}_{n:04d}.MP4": os.urandom(40_000) for n in range(1, 4)}
    src = camera(tmp_path / f"cam-{serial}-{len(os.listdir(tmp_path))}", serial=serial, files=files)
    if old:
        for name in files:
            os.utime(src / name, (OLD.timestamp(), OLD.timestamp()))
    result = await web.harness.ingest(slot, src)
    assert result.result == "done", result.reason
    if old:
        web.appliance.catalog.run(lambda c: c.execute("UPDATE recordings SET ingested_at = ? WHERE session_id = ?",
                                                      (iso(utcnow() - timedelta(days=240)), result.session_id)))
    async with asyncio.timeout(30):   # the daemon probes new recordings (ffprobe is off: it says so)
        while web.harness.rows("SELECT COUNT(*) AS n FROM recordings WHERE probed_at IS NULL")[0]["n"]:
            await asyncio.sleep(0.05)
    return {r["rel_path"]: r for r in web.harness.rows("SELECT * FROM recordings WHERE session_id = ?",
                                                        result.session_id)}


def add_account(web, name, role, officer=None):
    web.appliance.catalog.run(users.add_user, name, role, _HASH, officer=officer)


def actions(web, action_prefix):
    return [(r["action"], r["actor"], r["subject"]) for r in web.harness.rows(
        "SELECT action, actor, subject FROM audit_log WHERE action LIKE ? ORDER BY seq", action_prefix + "%")]


async def post(client, path, data, csrf_from="/account/password"):
    form = data if isinstance(data, list) else list(data.items())
    return await client.post(path, data=[("csrf_token", await token(client, csrf_from))] + form,
                             allow_redirects=False)


def created_id(resp):
    assert resp.status == 303, resp.status
    return int(resp.headers["Location"].rstrip("/").rsplit("/", 1)[1].split("?")[0])


# -- the device registry and deadlines ----------------------------------------------------

async def test_device_registry_on_the_page(web, tmp_path):
    dm = await web.login("device_manager")
    resp = await post(dm, "/devices", {"serial": "DSJ-0100", "asset_number": "ZC-2024-031", "brand": "警翼",
                                       "model": "X8", "purchase_date": "2024-03-01", "custodian": "王管理",
                                       "officer": "张伟", "notes": ""})
    did = created_id(resp)
    dup = await post(dm, "/devices", {"serial": "DSJ-0100", "officer": ""})
    assert dup.status == 400 and "registered already" in await dup.text()
    assert (await post(dm, f"/devices/{did}/assign", {"officer": "李娜", "reason": "交接"})).status == 303
    assert (await post(dm, f"/devices/{did}/status", {"status": "in_repair", "reason": "屏幕碎裂"})).status == 303
    assert (await post(dm, f"/devices/{did}/status", {"status": "in_service", "reason": ""})).status == 400
    assert (await post(dm, f"/devices/{did}/log", {"kind": "repair", "day": "2026-03-05", "text": "更换屏幕",
                                                   "performed_by": "厂家"})).status == 303
    page = await (await dm.get(f"/devices/{did}")).text()
    for text in ("ZC-2024-031", "王管理", "李娜", "交接", "屏幕碎裂", "更换屏幕", "维修中"):
        assert text in page, text
    legal = await web.login("legal")
    listing = await (await legal.get("/devices")).text()
    assert "DSJ-0100" in listing and "维修中" in listing and 'id="adddevice"' not in listing
    # the camera docks while in repair: ingested, flagged on the session and the page
    recs = await ingest(web, tmp_path, serial="DSJ-0100")
    flag = web.harness.rows("SELECT device_flag FROM sessions ORDER BY started_at DESC LIMIT 1")[0]["device_flag"]
    assert flag == "device_in_repair"
    rec_page = await (await dm.get(f"/recordings/{next(iter(recs.values()))['id']}")).text()
    assert "入库时该记录仪状态为“维修中”" in rec_page
    assert "非在用设备入库" in await (await dm.get(f"/devices/{did}")).text()
    assert [a for a, _actor, s in actions(web, "device.") if s == "DSJ-0100"] == [
        "device.add", "device.assign", "device.assign", "device.status", "device.repair",
        "device.docked-not-in-service"]


async def test_deadlines_page_lists_and_exports_overdue_and_not_returned_devices(web):
    catalog = web.appliance.catalog
    three_days = iso(utcnow() - timedelta(days=3))
    catalog.run(registry.add_device, "LATE01", officer="王强", custodian="王管理")
    catalog.run(lambda c: c.execute("UPDATE devices SET last_docked_at = ?, created_at = ? WHERE serial = 'LATE01'",
                                    (three_days, three_days)))
    catalog.run(lambda c: c.execute("INSERT INTO dockings (device_id, at, status) SELECT id, ?, 'in_service'"
                                    " FROM devices WHERE serial = 'LATE01'", (three_days,)))
    leader = await web.login("leader")
    page = await (await leader.get("/deadlines")).text()
    overdue_now = page.split('id="overdue-now"')[1].split("</table>")[0]
    assert "LATE01" in overdue_now and "王强" in overdue_now
    assert "LATE01" in page.split('id="daily-overdue"')[1].split("</table>")[0]
    listing = await (await leader.get("/devices")).text()
    assert re.search(r'data-serial="LATE01".*?超期未入库', listing, re.S)
    day = (datetime.now(timezone.utc) - timedelta(days=1)).astimezone().date().isoformat()
    csv_resp = await leader.get(f"/deadlines?day={day}&format=csv")
    body = await csv_resp.read()
    assert body.startswith("\ufeff".encode()) and "LATE01" in body.decode("utf-8")
    assert "attachment" in csv_resp.headers["Content-Disposition"]
    pdf = await leader.get(f"/deadlines?day={day}&format=pdf")
    assert (await pdf.read()).startswith(b"%PDF")
    assert [a for a, *_ in actions(web, "deadlines.export")] == ["deadlines.export", "deadlines.export"]


# -- the exception register (art. 8) -----------------------------------------------------

async def test_exception_register(web):
    leader = await web.login("leader")
    resp = await post(leader, "/exceptions", {"occurred_at": "2026-01-05T14:30", "place": "薛城区某农资店",
                                              "officers": "张伟、李娜", "case": "", "reason_kind": "device_fault",
                                              "reason": "记录仪电池故障，无法开机", "onsite_approver": "赵队长"})
    eid = created_id(resp)
    future = await post(leader, "/exceptions", {"occurred_at": "2099-01-01T10:00", "place": "x", "officers": "x",
                                                "reason_kind": "other", "reason": "x"})
    assert future.status == 400
    own = await post(leader, f"/exceptions/{eid}/decide", {"decision": "approve", "reason": "同意",
                                                           "capacity": "onsite_lead"})
    assert own.status == 403 and "不能审批本人提出的申请" in await own.text()
    assert actions(web, "exception.self-approval-refused") == [("exception.self-approval-refused", "leader", str(eid))]
    head = await web.login("bureau_head")
    no_reason = await post(head, f"/exceptions/{eid}/decide", {"decision": "approve", "reason": "",
                                                               "capacity": "department_head"})
    assert no_reason.status == 400
    ok = await post(head, f"/exceptions/{eid}/decide", {"decision": "approve", "reason": "设备故障属实，同意",
                                                        "capacity": "department_head"})
    assert ok.status == 303
    again = await post(head, f"/exceptions/{eid}/decide", {"decision": "refuse", "reason": "x",
                                                           "capacity": "department_head"})
    assert again.status == 400 and "already approved" in await again.text()
    page = await (await (await web.login("legal")).get("/exceptions")).text()
    assert "薛城区某农资店" in page and "已批准" in page and "办案部门领导" in page
    row = web.harness.rows("SELECT * FROM exceptions WHERE id = ?", eid)[0]
    assert (row["decided_by"], row["decided_as"], row["onsite_approver"]) == ("bureau_head", "department_head", "赵队长")
    assert [a for a, *_ in actions(web, "exception.")] == ["exception.create", "exception.self-approval-refused",
                                                           "exception.approve"]


# -- release approval (art. 16) ----------------------------------------------------------

async def test_release_request_approval_export_download_and_disc(web, tmp_path):
    recs = list((await ingest(web, tmp_path)).values())
    admin = await web.login("admin")
    await post(admin, "/admin/settings", {"session_idle_minutes": "30", "login_max_failures": "5",
                                          "lockout_minutes": "15", "pseudo_drives": "1"})
    dm = await web.login("device_manager")
    form = await (await dm.get(f"/releases/new?rid={recs[0]['id']}&rid={recs[1]['id']}")).text()
    assert recs[0]["rel_path"] in form and recs[2]["rel_path"] not in form
    lid = created_id(await post(dm, "/releases", [("rid", str(recs[0]["id"])), ("rid", str(recs[1]["id"])),
                                                  ("purpose", "party"), ("recipient", "当事人 某农资店"),
                                                  ("reason", "当事人申请复制执法录像"), ("want_disc", "1")]))
    # nothing leaves before a leader approves
    early = await post(dm, f"/releases/{lid}/export", {})
    assert early.status == 400 and "not approved" in await early.text()
    assert (await dm.get(f"/releases/{lid}/package")).status == 404
    assert (await post(dm, f"/releases/{lid}/decide", {"decision": "approve", "reason": "x"})).status == 403
    leader = await web.login("leader")
    page = await (await leader.get(f"/releases/{lid}")).text()
    assert 'id="decide"' in page and "当事人申请复制执法录像" in page
    assert (await post(leader, f"/releases/{lid}/decide", {"decision": "maybe", "reason": "x"})).status == 400
    assert (await post(leader, f"/releases/{lid}/decide", {"decision": "approve",
                                                           "reason": "经审核，同意提供"})).status == 303
    export = await post(dm, f"/releases/{lid}/export", {})
    assert export.status == 303
    release = web.harness.rows("SELECT * FROM releases WHERE id = ?", lid)[0]
    assert (release["state"], release["decided_by"], release["exported_by"]) == ("exported", "leader", "device_manager")
    download = await dm.get(f"/releases/{lid}/package")
    body = await download.read()
    assert hashlib.sha256(body).hexdigest() == release["export_sha256"]
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        sums = dict(line.split("  ", 1)[::-1] for line in zf.read("SHA256SUMS").decode().splitlines())
        assert len(sums) == 2
        for name, digest in sums.items():
            assert hashlib.sha256(zf.read(name)).hexdigest() == digest
        assert sorted(sums.values()) == sorted([recs[0]["sha256"], recs[1]["sha256"]])
        meta = json.loads(zf.read("release.json"))
        assert meta["approved_by"] == "leader" and meta["approval_reason"] == "经审核，同意提供"
        assert meta["requested_by"] == "device_manager" and meta["audit_chain_head"]
    # the disc, through the disc register's burn jobs
    drive = f"stdio:{web.appliance.config.state_dir}/pseudo-drives/drive-1.iso"
    burn = await post(dm, f"/releases/{lid}/burn", {"medium": "cd", "drive": drive})
    assert burn.status == 303 and burn.headers["Location"].startswith("/burn/jobs/")
    async with asyncio.timeout(120):
        while web.harness.rows("SELECT state FROM burn_jobs")[0]["state"] not in ("done", "failed"):
            await asyncio.sleep(0.2)
    assert web.harness.rows("SELECT state FROM burn_jobs")[0]["state"] == "done"
    assert web.harness.rows("SELECT burn_job_id FROM releases WHERE id = ?", lid)[0]["burn_job_id"]
    trail = [(a, actor) for a, actor, _s in actions(web, "release.")]
    assert trail == [("release.request", "device_manager"), ("release.approve", "leader"),
                     ("release.export", "device_manager"), ("release.download", "device_manager"),
                     ("release.disc", "device_manager")]
    assert web.appliance.catalog.run(audit.verify_chain).ok


async def test_a_release_is_never_approved_by_its_requester_and_a_refusal_blocks_the_export(web, tmp_path):
    recs = list((await ingest(web, tmp_path)).values())
    add_account(web, "leader2", "leader")
    leader = await web.login("leader")
    lid = created_id(await post(leader, "/releases", [("rid", str(recs[0]["id"])), ("purpose", "public"),
                                                      ("recipient", "宣传科"), ("reason", "普法宣传")]))
    page = await (await leader.get(f"/releases/{lid}")).text()
    assert "这是您本人提出的申请" in page
    own = await post(leader, f"/releases/{lid}/decide", {"decision": "approve", "reason": "同意"})
    assert own.status == 403
    assert web.harness.rows("SELECT state FROM releases WHERE id = ?", lid)[0]["state"] == "pending"
    other = await web.login("leader2")
    assert (await post(other, f"/releases/{lid}/decide", {"decision": "refuse",
                                                          "reason": "涉及当事人隐私，不同意公开"})).status == 303
    dm = await web.login("device_manager")
    refused = await post(dm, f"/releases/{lid}/export", {})
    assert refused.status == 400 and "refused" in await refused.text()
    row = web.harness.rows("SELECT * FROM releases WHERE id = ?", lid)[0]
    assert (row["state"], row["decided_by"], row["decision_reason"]) == ("refused", "leader2", "涉及当事人隐私，不同意公开")
    assert [a for a, *_ in actions(web, "release.")] == ["release.request", "release.self-approval-refused",
                                                         "release.refuse"]


# -- judicial access (art. 17) -----------------------------------------------------------

async def test_judicial_request_approval_viewing_and_the_access_register(web, tmp_path):
    recs = list((await ingest(web, tmp_path)).values())
    dm = await web.login("device_manager")
    t = await token(dm, "/cases")
    case = await dm.post("/cases", data={"csrf_token": t, "number": "农执〔2026〕21号", "title": "销售假农药案"},
                         allow_redirects=False)
    case_id = created_id(case)
    await dm.post("/recordings/tag", data=[("csrf_token", t), ("case", str(case_id))]
                  + [("rid", str(r["id"])) for r in recs])
    jid = created_id(await post(dm, "/judicial", {"case": str(case_id), "authority_kind": "court",
                                                  "authority": "枣庄市市中区人民法院", "letter_ref": "（2026）鲁0402刑初15号",
                                                  "purpose": "审理需要，调阅现场执法录像"}))
    early = await post(dm, f"/judicial/{jid}/access", {"viewer": "刘法官", "viewer_unit": "市中区法院",
                                                       "reason": "庭审准备", "started_at": "2026-01-10T09:00"})
    assert early.status == 400 and "not approved" in await early.text()
    leader = await web.login("leader")
    assert (await post(leader, f"/judicial/{jid}/decide", {"decision": "approve", "reason": "x"})).status == 403
    head = await web.login("bureau_head")
    assert (await post(head, f"/judicial/{jid}/decide", {"decision": "approve",
                                                         "reason": "依法调阅，同意"})).status == 303
    ok = await post(dm, f"/judicial/{jid}/access", {"viewer": "刘法官", "viewer_unit": "枣庄市市中区人民法院",
                                                    "viewer_id": "37040219800101001X", "reason": "庭审准备",
                                                    "started_at": "2026-01-10T09:00", "ended_at": "2026-01-10T10:30",
                                                    "notes": "在设备室查阅"})
    assert ok.status == 303
    backwards = await post(dm, f"/judicial/{jid}/access", {"viewer": "x", "viewer_unit": "x", "reason": "x",
                                                           "started_at": "2026-01-10T09:00",
                                                           "ended_at": "2026-01-10T08:00"})
    assert backwards.status == 400
    legal = await web.login("legal")
    register = await (await legal.get("/judicial/register?from=2026-01-01&to=2026-01-31")).text()
    for text in ("刘法官", "枣庄市市中区人民法院", "庭审准备", "2026-01-10 09:00", "bureau_head", "device_manager"):
        assert text in register, text
    empty = await (await legal.get("/judicial/register?from=2026-02-01&to=2026-02-28")).text()
    assert "刘法官" not in empty
    body = (await (await legal.get("/judicial/register?format=csv")).read()).decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(body)))
    header = next(r for r in rows if "查阅人" in r)
    entry = rows[rows.index(header) + 1]
    assert entry[header.index("查阅人")] == "刘法官" and entry[header.index("批准人")] == "bureau_head"
    assert entry[header.index("查阅单位")] == "枣庄市市中区人民法院" and entry[header.index("录像数")] == "3"
    pdf = await legal.get("/judicial/register?format=pdf")
    assert pdf.status == 200 and (await pdf.read()).startswith(b"%PDF")
    assert [a for a, *_ in actions(web, "judicial.")] == [
        "judicial.request", "judicial.approve", "judicial.access", "judicial.register", "judicial.register",
        "judicial.register", "judicial.register"]


# -- confidentiality (art. 3) ------------------------------------------------------------

async def test_confidential_recordings_are_withheld_everywhere_and_every_attempt_is_audited(web, tmp_path):
    recs = list((await ingest(web, tmp_path, serial="CAM001", officer="张伟")).values())
    plain, private, secret = recs
    dm = await web.login("device_manager")
    assert (await post(dm, "/recordings/mark", [("rid", str(private["id"])), ("mark", "privacy"),
                                               ("reason", "涉及未成年人"), ("back", "/recordings")])).status == 303
    assert (await post(dm, "/recordings/mark", [("rid", str(secret["id"])), ("mark", "state_secret"),
                                               ("back", "/recordings")])).status == 303
    # search: the device manager (cleared for privacy by role) no longer finds the state secret
    listing = await (await dm.get("/recordings")).text()
    assert plain["rel_path"] in listing and private["rel_path"] in listing and secret["rel_path"] not in listing
    assert "个人隐私" in listing
    search_row = web.harness.rows("SELECT details FROM audit_log WHERE action = 'recording.search' AND actor ="
                                  " 'device_manager' ORDER BY seq DESC LIMIT 1")[0]
    assert '"withheld_marks": ["state_secret", "trade_secret"]' in search_row["details"]
    # detail, play, download: refused as if it did not exist, and audited
    for path, what in ((f"/recordings/{secret['id']}", "view"), (f"/recordings/{secret['id']}/media", "play"),
                       (f"/recordings/{secret['id']}/media?download=1", "download")):
        resp = await dm.get(path)
        assert resp.status == 404 and secret["sha256"] not in await resp.text()
    refused = web.harness.rows("SELECT actor, subject, details FROM audit_log"
                               " WHERE action = 'recording.refused-confidential'")
    assert [(r["actor"], r["subject"]) for r in refused] == [("device_manager", str(secret["id"]))] * 3
    assert [json.loads(r["details"])["what"] for r in refused] == ["view", "play", "download"]
    assert all(json.loads(r["details"])["marks"] == ["state_secret"] for r in refused)
    # the officer who filmed them sees neither marked one
    officer = await web.login("officer")
    own = await (await officer.get("/recordings")).text()
    assert plain["rel_path"] in own and private["rel_path"] not in own
    assert (await officer.get(f"/recordings/{private['id']}/media")).status == 404
    # the bureau head sees all, and every view of a marked recording says so in the audit log
    head = await web.login("bureau_head")
    assert secret["rel_path"] in await (await head.get("/recordings")).text()
    assert (await head.get(f"/recordings/{secret['id']}")).status == 200
    media = await head.get(f"/recordings/{secret['id']}/media?download=1")
    assert hashlib.sha256(await media.read()).hexdigest() == secret["sha256"]
    viewed = web.harness.rows("SELECT action, details FROM audit_log WHERE actor = 'bureau_head'"
                              " AND subject = ? AND action IN ('recording.view', 'recording.download')", str(secret["id"]))
    assert [v["action"] for v in viewed] == ["recording.view", "recording.download"]
    assert all('"marks": ["state_secret"]' in v["details"] for v in viewed)
    # nothing built on recordings lets the withheld one through
    burn = await post(dm, "/burn/plan", [("rid", str(secret["id"])), ("medium", "cd"), ("drive", "")])
    assert burn.status == 400 and "not visible" in await burn.text()
    release = await post(dm, "/releases", [("rid", str(secret["id"])), ("purpose", "party"),
                                            ("recipient", "x"), ("reason", "x")])
    assert release.status == 400 and "not visible" in await release.text()
    tag = await post(dm, "/recordings/tag", [("rid", str(secret["id"])), ("tag", "x"), ("back", "/recordings")])
    assert tag.status == 400
    # the bureau head clears the device manager by name: now visible, and audited
    uid = web.harness.rows("SELECT id FROM users WHERE name = 'device_manager'")[0]["id"]
    assert (await post(head, "/clearances", {"user": str(uid), "mark": "state_secret", "action": "grant"},
                       "/clearances")).status == 303
    assert (await dm.get(f"/recordings/{secret['id']}")).status == 200
    assert actions(web, "clearance.") == [("clearance.grant", "bureau_head", "device_manager")]
    # taking a mark off needs a reason
    assert (await post(dm, f"/recordings/{private['id']}/unmark", {"mark": "privacy", "reason": ""})).status == 400
    assert (await post(dm, f"/recordings/{private['id']}/unmark", {"mark": "privacy",
                                                                   "reason": "经核实不涉及隐私"})).status == 303
    assert private["rel_path"] in await (await officer.get("/recordings")).text()


async def test_a_marked_case_hides_itself_and_its_recordings(web, tmp_path):
    recs = list((await ingest(web, tmp_path)).values())
    dm = await web.login("device_manager")
    t = await token(dm, "/cases")
    case_id = created_id(await dm.post("/cases", data={"csrf_token": t, "number": "SM-1", "title": "涉企案件"},
                                       allow_redirects=False))
    await dm.post("/recordings/tag", data=[("csrf_token", t), ("case", str(case_id)), ("rid", str(recs[0]["id"]))])
    leader = await web.login("leader")
    resp = await post(leader, f"/cases/{case_id}/mark", {"mark": "trade_secret", "reason": "涉及企业配方"})
    assert resp.status == 303 and resp.headers["Location"] == f"/cases/{case_id}"
    # the device manager is not cleared for trade secrets: the case and its recording are gone for them
    assert "SM-1" not in await (await dm.get("/cases")).text()
    assert (await dm.get(f"/cases/{case_id}")).status == 404
    assert recs[0]["rel_path"] not in await (await dm.get("/recordings")).text()
    assert (await dm.get(f"/recordings/{recs[0]['id']}")).status == 404
    refused = [a for a in actions(web, "") if a[0].endswith("refused-confidential")]
    assert ("case.refused-confidential", "device_manager", "SM-1") in refused
    assert ("recording.refused-confidential", "device_manager", str(recs[0]["id"])) in refused
    # the leader still sees it all, with the mark shown
    case_page = await (await leader.get(f"/cases/{case_id}")).text()
    assert recs[0]["rel_path"] in case_page and "商业秘密" in case_page
    assert actions(web, "case.mark") == [("case.mark", "leader", "SM-1")]


# -- retention (art. 7) ------------------------------------------------------------------

async def test_retention_purge_through_the_page(web, tmp_path):
    recs = await ingest(web, tmp_path, old=True)
    keep, *purge = sorted(recs.values(), key=lambda r: r["id"])
    dm = await web.login("device_manager")
    await post(dm, "/recordings/tag", [("rid", str(keep["id"])), ("category", "objection"), ("back", "/recordings")])
    overview = await (await dm.get("/retention")).text()
    assert re.search(r'id="candidates">2<', overview)
    pid = created_id(await post(dm, "/retention", {}))
    assert (await post(dm, f"/retention/{pid}/execute", {})).status == 400          # not approved
    assert (await post(dm, f"/retention/{pid}/decide", {"decision": "approve", "reason": "x"})).status == 403
    leader = await web.login("leader")
    listing = await (await leader.get(f"/retention/{pid}")).text()
    assert all(r["rel_path"] in listing for r in purge) and keep["rel_path"] not in listing
    assert (await post(leader, f"/retention/{pid}/decide", {"decision": "approve",
                                                            "reason": "保存期满，同意清理"})).status == 303
    # between approval and execution one becomes evidence of a long-term kind: it stays
    *purge, late = purge
    await post(dm, "/recordings/tag", [("rid", str(late["id"])), ("category", "objection"), ("back", "/recordings")])
    done = await post(dm, f"/retention/{pid}/execute", {})
    assert done.status == 303 and done.headers["Location"] == f"/retention/{pid}?done=1"
    vault = web.appliance.vault
    assert vault.absolute(keep["vault_path"]).exists() and vault.absolute(late["vault_path"]).exists()
    assert not any(vault.absolute(r["vault_path"]).exists() for r in purge)
    assert "长期保存类别（第七条）" in await (await dm.get(f"/retention/{pid}")).text()  # why, in Chinese
    page = await (await dm.get(f"/recordings/{purge[0]['id']}")).text()
    assert "文件已删除，登记信息永久保留" in page and purge[0]["sha256"] in page
    assert (await dm.get(f"/recordings/{purge[0]['id']}/media")).status == 410
    assert purge[0]["rel_path"] not in await (await dm.get("/recordings")).text()
    assert sorted(s for a, _actor, s in actions(web, "recording.purge")) == sorted(str(r["id"]) for r in purge)


# -- continuity and the supervision report -----------------------------------------------

async def test_continuity_flags_are_reviewed_on_the_page(web, tmp_path):
    recs = sorted((await ingest(web, tmp_path)).values(), key=lambda r: r["id"])
    catalog = web.appliance.catalog
    base = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)

    def timeline(conn):   # three clips of 60 s with a 45 s pause after the first
        for n, (r, start) in enumerate(zip(recs, (0, 105, 165))):
            conn.execute("UPDATE recordings SET camera_mtime = ? WHERE id = ?",
                         (iso(base + timedelta(seconds=start + 60)), r["id"]))
        for r in recs:
            cat.set_probe(conn, r["id"], {"duration_s": 60.0})
    catalog.run(timeline)
    leader = await web.login("leader")
    page = await (await leader.get("/continuity")).text()
    assert page.count('data-kind="gap"') == 1 and 'data-seconds="45.0"' in page
    flag = catalog.run(continuity.flags)[0]
    assert (await post(leader, f"/continuity/{flag['id']}/review", {"explanation": ""})).status == 400
    assert (await post(leader, f"/continuity/{flag['id']}/review",
                       {"explanation": "当事人要求暂停，经现场负责人同意"})).status == 303
    page = await (await (await web.login("legal")).get("/continuity?state=explained")).text()
    assert "当事人要求暂停" in page and "leader" in page
    assert [a for a, *_ in actions(web, "continuity.")] == ["continuity.gap", "continuity.review"]


async def test_the_supervision_report_prints_and_exports(web, tmp_path):
    recs = list((await ingest(web, tmp_path)).values())
    catalog = web.appliance.catalog
    for r in recs:
        catalog.run(cat.set_probe, r["id"], {"duration_s": 1800.0})
    legal = await web.login("legal")
    today = datetime.now(timezone.utc).date()
    query = f"from={(today - timedelta(days=7)).isoformat()}&to={(today + timedelta(days=1)).isoformat()}"
    html = await (await legal.get(f"/reports?{query}")).text()
    for text in ("监督检查报告", "按执法人员", "按设备", "张伟", "CAM001", "完整性校验", "司法查阅登记", "单位负责人（签字）"):
        assert text in html, text
    body = (await (await legal.get(f"/reports?{query}&format=csv")).read()).decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(body)))
    assert rows[0] == ["监督检查报告"]
    per_officer = rows[[r[:1] for r in rows].index(["按执法人员"]) + 2]
    assert per_officer[:4] == ["张伟", "4", "1.5", "4"]     # the fixture's one and 3 of 30 minutes, none tagged
    pdf = await legal.get(f"/reports?{query}&format=pdf")
    assert pdf.headers["Content-Type"] == "application/pdf" and (await pdf.read()).startswith(b"%PDF")
    bad = await legal.get("/reports?from=2026-02-01&to=2026-01-01")
    assert bad.status == 400
    assert [a for a, *_ in actions(web, "report.")].count("report.supervision") == 4


async def test_the_approvals_page_shows_what_waits(web, tmp_path):
    recs = list((await ingest(web, tmp_path)).values())
    dm = await web.login("device_manager")
    lid = created_id(await post(dm, "/releases", [("rid", str(recs[0]["id"])), ("purpose", "outside_body"),
                                                  ("recipient", "市场监管局"), ("reason", "联合执法")]))
    page = await (await (await web.login("leader")).get("/approvals")).text()
    assert f'href="/releases/{lid}"' in page and "市场监管局" in page


# -- the rules of the route table and the words ------------------------------------------

def test_who_may_decide_what_in_the_route_table():
    from appliance.web.access import may
    from appliance.web.routes import ROUTES

    by_name = {r.name: r for r in ROUTES}
    for name in ("exception.decide", "release.decide", "purge.decide"):
        assert by_name[name].access == frozenset({"leader", "bureau_head"}), name
    assert by_name["judicial.decide"].access == frozenset({"bureau_head"})      # art. 17: the bureau head
    assert by_name["clearances.change"].access == frozenset({"bureau_head"})
    # exports and viewings are the custodian's; IT never reaches evidence content
    for name in ("release.export", "release.package", "release.burn", "judicial.access", "purge.execute"):
        assert by_name[name].access == frozenset({"device_manager", "admin"}), name
        assert not may(by_name[name].access, "it_admin")
    # the legal section reads every register and report
    for name in ("devices", "deadlines", "exceptions", "releases", "judicial", "judicial.register", "retention",
                 "continuity", "reports", "approvals"):
        assert may(by_name[name].access, "legal"), name


def test_every_word_of_the_workflows_is_translated():
    from appliance.catalog import confidentiality, exceptions, judicial, releases, retention
    from appliance.web import i18n

    keys = ([f"dev.status.{s}" for s in registry.DEVICE_STATUSES]
            + [f"dev.kind.{k}" for k in (*registry.WORK_KINDS, "status")]
            + [f"cont.kind.{k}" for k in continuity.KINDS] + [f"cont.state.{k}" for k in continuity.STATES]
            + [f"exc.kind.{k}" for k in exceptions.REASON_KINDS] + [f"exc.as.{k}" for k in exceptions.CAPACITIES]
            + [f"jud.kind.{k}" for k in judicial.AUTHORITY_KINDS] + [f"rel.purpose.{k}" for k in releases.PURPOSES]
            + [f"mark.{k}" for k in confidentiality.MARKS] + [f"mark.{k}.help" for k in confidentiality.MARKS]
            + [f"appr.state.{k}" for k in ("pending", "approved", "refused", "exported", "executing", "done")]
            + [f"ret.item.{k}" for k in ("listed", "purged", "kept")]
            + [f"ret.why.{reason}" for reason, _ in retention.PROTECTIONS] + [f"ret.why.{retention.NOT_AT_HQ}"])
    assert [k for k in keys if k not in i18n.MESSAGES] == []
    from appliance.catalog.retention import PROTECTIONS
    assert len(PROTECTIONS) == 4
