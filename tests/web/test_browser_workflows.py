"""The approval workflows in a real headless Chromium (Debian's ``chromium`` through Playwright),
end to end across two users in two browser contexts: a release from the search page to the
leader's approval to the export and its download; a judicial request to the bureau head's
approval, the custodian's registration of the viewing, and the access register the legal
section prints and exports. Screenshots go to ``test-output/screenshots/``.
"""

from __future__ import annotations

import asyncio
import hashlib
import zipfile

import pytest

from appliance.daemon import Appliance
from appliance.vault.base import open_folders
from tests.support.appliance import Harness, make_config
from tests.web.support import PASSWORD, add_accounts
from tests.web.test_browser import ARGS, CHROMIUM, _camera, _shot, playwright_api

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
async def station(tmp_path):
    config = make_config(tmp_path, web={"host": "127.0.0.1", "port": 0})
    appliance = Appliance(config)
    await appliance.start(udev=False)
    add_accounts(appliance)
    harness = Harness(appliance)
    harness.register("DSJ0001", "张伟")
    source = await asyncio.to_thread(_camera, tmp_path, "DSJ0001", "张伟", 3)
    assert (await harness.ingest(1, source)).result == "done"
    base = f"http://127.0.0.1:{appliance.bound_port}"
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield appliance, harness, base, browser
        finally:
            await browser.close()
            await appliance.stop()
            open_folders(tmp_path)


async def _user(browser, base: str, name: str):
    """A page in a browser context of its own (its own cookies), logged in as ``name``."""
    context = await browser.new_context(viewport={"width": 1366, "height": 768}, accept_downloads=True)
    page = await context.new_page()
    await page.goto(f"{base}/login")
    await page.fill('input[name="name"]', name)
    await page.fill('input[name="password"]', PASSWORD)
    await page.click('button[type="submit"].primary')
    await page.wait_for_load_state("networkidle")
    return page


async def test_a_release_from_request_to_approval_to_export(station, tmp_path):
    appliance, harness, base, browser = station
    manager = await _user(browser, base, "device_manager")
    await manager.goto(base + "/recordings")
    boxes = manager.locator('table.grid tbody input[name="rid"]')
    assert await boxes.count() >= 3
    await boxes.nth(0).check()
    await boxes.nth(1).check()
    await manager.click("#askrelease")
    await manager.wait_for_url("**/releases/new?*")
    assert await manager.locator('#newrelease input[name="rid"]:checked').count() == 2
    await manager.select_option('select[name="purpose"]', "party")
    await manager.fill('input[name="recipient"]', "当事人 薛城区某农资店")
    await manager.fill('textarea[name="reason"]', "当事人申请复制现场检查录像，用于行政复议")
    await _shot(manager, "20-release-request")
    await manager.click("#submitrelease")
    await manager.wait_for_url("**/releases/*")
    release_url = manager.url
    assert "待审批" in await manager.inner_text("#relstate")
    assert await manager.locator("#decide").count() == 0          # the device manager does not decide
    assert await manager.locator("#exportbtn").count() == 0      # nor export before the approval

    leader = await _user(browser, base, "leader")
    await leader.goto(base + "/approvals")
    await _shot(leader, "21-approvals-pending")
    await leader.click("#pending-releases a")
    await leader.wait_for_url(release_url)
    await leader.fill('#decide textarea[name="reason"]', "经审核，符合规定，同意提供")
    await _shot(leader, "22-release-decide")
    await leader.click("#approve")
    await leader.wait_for_load_state("networkidle")
    assert "已批准" in await leader.inner_text("#relstate")
    assert "经审核，符合规定，同意提供" in await leader.inner_text(".decided + dt + dd, .reason")

    await manager.goto(release_url)
    await manager.click("#exportbtn")
    await manager.wait_for_selector("#packagehash")
    assert "已导出" in await manager.inner_text("#relstate")
    shown = (await manager.inner_text("#packagehash")).strip()
    await _shot(manager, "23-release-exported")
    async with manager.expect_download() as info:
        await manager.click("#download")
    download = await info.value
    path = tmp_path / "package.zip"
    await download.save_as(path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == shown
    with zipfile.ZipFile(path) as zf:
        assert "SHA256SUMS" in zf.namelist() and len([n for n in zf.namelist() if n.startswith("files/")]) == 2
    trail = [(r["action"], r["actor"]) for r in harness.rows(
        "SELECT action, actor FROM audit_log WHERE action LIKE 'release.%' ORDER BY seq")]
    assert trail == [("release.request", "device_manager"), ("release.approve", "leader"),
                     ("release.export", "device_manager"), ("release.download", "device_manager")]


async def test_judicial_access_from_request_to_the_printed_register(station, tmp_path):
    appliance, harness, base, browser = station
    manager = await _user(browser, base, "device_manager")
    await manager.goto(base + "/recordings")
    await manager.locator('table.grid tbody input[name="rid"]').nth(0).check()
    await manager.click('button[formaction="/judicial/new"]')
    await manager.wait_for_url("**/judicial/new?*")
    await manager.select_option('select[name="authority_kind"]', "procuratorate")
    await manager.fill('input[name="authority"]', "枣庄市薛城区人民检察院")
    await manager.fill('input[name="letter_ref"]', "薛检调〔2026〕3号")
    await manager.fill('textarea[name="purpose"]', "审查起诉需要，调阅现场执法录像")
    await manager.click("#submitjudicial")
    await manager.wait_for_url("**/judicial/*")
    request_url = manager.url
    assert "待审批" in await manager.inner_text("#judstate")
    assert await manager.locator("#registeraccess").count() == 0      # no viewing before approval

    leader = await _user(browser, base, "leader")
    await leader.goto(request_url)
    assert await leader.locator("#decide").count() == 0               # a leader may not: the bureau head
    head = await _user(browser, base, "bureau_head")
    await head.goto(request_url)
    await head.fill('#decide textarea[name="reason"]', "依法调阅，同意")
    await head.click("#approve")
    await head.wait_for_load_state("networkidle")
    assert "已批准" in await head.inner_text("#judstate")

    await manager.goto(request_url)
    await manager.fill('#registeraccess input[name="viewer"]', "孙检察官")
    await manager.fill('#registeraccess input[name="viewer_id"]', "检察官证 370400123")
    await manager.fill('#registeraccess input[name="started_at"]', "2026-01-12T14:00")
    await manager.fill('#registeraccess input[name="ended_at"]', "2026-01-12T15:10")
    await manager.click("#registerbtn")
    await manager.wait_for_selector("#viewings")
    assert "孙检察官" in await manager.inner_text("#viewings")
    await _shot(manager, "24-judicial-request")

    legal = await _user(browser, base, "legal")
    await legal.goto(base + "/judicial/register")
    table = await legal.inner_text("#register")
    assert "孙检察官" in table and "枣庄市薛城区人民检察院" in table and "bureau_head" in table
    await _shot(legal, "25-access-register")
    await legal.emulate_media(media="print")
    await _shot(legal, "26-access-register-print")
    await legal.emulate_media(media="screen")
    async with legal.expect_download() as info:
        await legal.click('a[href$="format=csv"]')
    download = await info.value
    path = tmp_path / "register.csv"
    await download.save_as(path)
    text = path.read_bytes().decode("utf-8-sig")
    assert "孙检察官" in text and "薛检调〔2026〕3号" in text


async def test_the_workflow_pages_look_right(station, tmp_path):
    """Screenshots of the registry, deadlines, registers, retention, continuity and report pages,
    in Chinese and in English, with no script or policy error in the browser console."""
    from datetime import timedelta

    from appliance.catalog import continuity, exceptions, registry, retention
    from appliance.catalog import sessions as cat
    from appliance.timeutil import iso, utcnow

    appliance, harness, base, browser = station
    catalog = appliance.catalog
    device = catalog.run(registry.get_device, "DSJ0001")
    catalog.run(registry.update_details, device.id, actor="device_manager", brand="警翼", model="DSJ-X8",
                asset_number="ZC-2024-0031", purchase_date="2024-03-01", custodian="王管理", notes="")
    catalog.run(registry.log_work, device.id, "maintenance", day="2026-01-05", text="清洁镜头，检查电池",
                performed_by="王管理", actor="device_manager")
    lost = catalog.run(registry.add_device, "DSJ0009", officer="李娜", brand="警翼", model="DSJ-X8",
                       asset_number="ZC-2024-0039", custodian="王管理", actor="device_manager")
    catalog.run(registry.set_status, lost.id, "lost", actor="device_manager", reason="巡查中遗失，已报告")
    late = catalog.run(registry.add_device, "DSJ0005", officer="王强", brand="警翼", model="DSJ-X8",
                       custodian="王管理", actor="device_manager")
    three_days = iso(utcnow() - timedelta(days=3))
    catalog.run(lambda c: c.execute("UPDATE devices SET created_at = ?, last_docked_at = ? WHERE id = ?",
                                    (three_days, three_days, late.id)))
    catalog.run(exceptions.create, occurred_at=utcnow() - timedelta(days=1), place="薛城区某农资店",
                officers="张伟、李娜", reason_kind="device_fault", reason="记录仪无法开机", actor="leader",
                onsite_approver="赵队长")
    rows = harness.rows("SELECT id, rel_path FROM recordings ORDER BY camera_mtime")

    def flags(conn):   # the clips are 4 s long, 35 s apart (the simulated camera's pause)
        for r in rows:
            cat.set_probe(conn, r["id"], {"duration_s": 4.0})
    catalog.run(flags)
    catalog.run(lambda c: c.execute("UPDATE recordings SET ingested_at = ?", (iso(utcnow() - timedelta(days=300)),)))
    catalog.run(lambda c: c.execute("UPDATE recordings SET camera_mtime = ?", (iso(utcnow() - timedelta(days=300)),)))
    catalog.run(retention.propose, now=utcnow(), months=6, actor="device_manager")
    assert catalog.run(continuity.flags)

    errors: list[str] = []
    pages = {}
    for name, lang in (("device_manager", "zh"), ("leader", "zh"), ("bureau_head", "en")):
        page = await _user(browser, base, name)
        page.on("console", lambda m: errors.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
        if lang == "en":
            await page.goto(base + "/lang/en?next=/")
        pages[name] = page
    dm, leader, head = pages["device_manager"], pages["leader"], pages["bureau_head"]
    for page, path, shot in (
            (dm, "/devices", "27-devices"), (dm, f"/devices/{device.id}", "28-device"),
            (leader, "/deadlines", "29-deadlines"), (leader, "/exceptions", "30-exceptions"),
            (leader, "/retention", "31-retention"), (leader, "/retention/1", "32-purge-list"),
            (leader, "/continuity", "33-continuity"), (leader, "/reports", "34-report"),
            (head, "/clearances", "35-clearances-en"), (head, "/approvals", "36-approvals-en"),
            (head, "/reports", "37-report-en")):
        response = await page.goto(base + path)
        assert response.status == 200, path
        await _shot(page, shot)
    await leader.goto(base + "/reports")
    await leader.emulate_media(media="print")
    await _shot(leader, "38-report-print")
    await dm.goto(f"{base}/recordings/{rows[0]['id']}")
    await dm.select_option('#markform select[name="mark"]', "privacy")
    await dm.fill('#markform input[name="reason"]', "涉及未成年人")
    await dm.click('#markform button[type="submit"]')
    await dm.wait_for_load_state("networkidle")
    assert "个人隐私" in await dm.inner_text(".pagehead")
    await _shot(dm, "39-recording-marked")
    assert not errors, errors
