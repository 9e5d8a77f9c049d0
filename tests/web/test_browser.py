"""The page in a real headless Chromium (Debian's ``chromium``, driven by Playwright with the
system browser; no browser download): watch the slot board while a camera is docked, log
in, search and play a recording with seeking, tag it to a case, burn the case to a
``stdio:`` pseudo-drive and see the progress reach "verified". Screenshots go to
``test-output/screenshots/``.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from appliance.daemon import Appliance
from appliance.vault.base import open_folders
from appliance.demo.cameras import CameraSpec, build_camera_dir
from appliance.web.keys import BURNS
from tests.support.appliance import Harness, make_config
from tests.web.support import PASSWORD, add_accounts

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).parents[2] / "test-output" / "screenshots"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed")
if not CHROMIUM.exists():
    pytest.skip("Debian's chromium is not installed (scripts/packages/test.txt)", allow_module_level=True)
if not shutil.which("ffmpeg"):
    pytest.skip("ffmpeg is needed to make real MP4 clips", allow_module_level=True)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
async def station(tmp_path):
    config = make_config(tmp_path, web={"host": "127.0.0.1", "port": 0})
    appliance = Appliance(config)
    await appliance.start(udev=False)
    add_accounts(appliance)
    harness = Harness(appliance)
    harness.register("DSJ0001", "张伟")
    harness.register("DSJ0002", "李娜")
    base = f"http://127.0.0.1:{appliance.bound_port}"
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield appliance, harness, base, browser, tmp_path
        finally:
            await browser.close()
            await appliance.stop()
            open_folders(tmp_path)


def _camera(tmp_path: Path, serial: str, officer: str, clips: int = 3) -> Path:
    spec = CameraSpec(serial=serial, officer=officer, clips=clips, clip_seconds=4.0)
    return build_camera_dir(spec, tmp_path / f"cam-{serial}", tmp_path / "clip-cache")


async def _shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


async def _until(page, expression: str, timeout: float = 30) -> None:
    """Poll a JavaScript expression (page.wait_for_function would need 'unsafe-eval', which
    the page's CSP rightly refuses)."""
    async with asyncio.timeout(timeout):
        while not await page.evaluate(expression):
            await asyncio.sleep(0.1)


async def _login(page, base: str, name: str) -> None:
    await page.goto(f"{base}/login")
    await page.fill('input[name="name"]', name)
    await page.fill('input[name="password"]', PASSWORD)
    await page.click('button[type="submit"].primary')
    await page.wait_for_load_state("networkidle")


async def test_the_slot_board_changes_live_while_a_camera_is_docked(station):
    appliance, harness, base, browser, tmp_path = station
    source = await asyncio.to_thread(_camera, tmp_path, "DSJ0001", "张伟", 6)
    page = await browser.new_page(viewport={"width": 1366, "height": 768})
    await page.goto(base + "/")
    await page.wait_for_selector("#live.on")
    await _shot(page, "01-board-empty")
    tile = page.locator('.tile[data-slot="2"]')
    assert "空闲" in await tile.inner_text()
    harness.dock(2, source)
    await page.wait_for_selector('.tile[data-slot="2"]:not(.state-empty)', timeout=30_000)
    states = set()
    for _ in range(400):
        states.add((await tile.get_attribute("class")).split()[1])
        if "state-done" in states:
            break
        await asyncio.sleep(0.05)
    assert "state-done" in states, states
    text = await tile.inner_text()
    assert "张伟" in text and "完成，可以拔出" in text
    await _shot(page, "02-board-done")
    harness.undock(2)
    await page.wait_for_selector('.tile[data-slot="2"].state-empty', timeout=10_000)
    tablet = await browser.new_page(viewport={"width": 800, "height": 1280})
    await tablet.goto(base + "/")
    await _shot(tablet, "03-board-tablet")


async def test_login_search_play_tag_and_burn(station):
    appliance, harness, base, browser, tmp_path = station
    source = await asyncio.to_thread(_camera, tmp_path, "DSJ0001", "张伟")
    result = await harness.ingest(1, source)
    assert result.result == "done", result.reason
    other = await asyncio.to_thread(_camera, tmp_path, "DSJ0002", "李娜", 2)
    assert (await harness.ingest(3, other)).result == "done"
    page = await browser.new_page(viewport={"width": 1366, "height": 768})
    await page.goto(base + "/recordings")
    assert "/login" in page.url                       # not logged in: to the login page
    await _shot(page, "04-login")
    await page.fill('input[name="name"]', "device_manager")
    await page.fill('input[name="password"]', "wrong password")
    await page.click('button[type="submit"].primary')
    assert "用户名或密码错误" in await page.inner_text(".alert.error")
    await page.fill('input[name="password"]', PASSWORD)
    await page.click('button[type="submit"].primary')
    await page.wait_for_url("**/recordings")
    await _shot(page, "05-recordings")

    # search: one officer's recordings
    officer = await page.locator('select[name="officer"] option', has_text="张伟").get_attribute("value")
    await page.select_option('select[name="officer"]', officer)
    await page.click('.filters button[type="submit"]')
    await page.wait_for_load_state("networkidle")
    rows = page.locator("table.grid tbody tr")
    assert await rows.count() == 3 + 1 + 0 or await rows.count() >= 3
    assert "李娜" not in await page.inner_text("table.grid tbody")
    await _shot(page, "06-search-officer")

    # play with seeking
    await page.locator("table.grid td.file a", has_text=".MP4").first.click()
    await page.wait_for_selector("video#player")
    await _until(page, "document.getElementById('player').readyState >= 1", 20)
    duration = await page.evaluate("document.getElementById('player').duration")
    assert duration > 2
    await page.evaluate("""() => new Promise(done => { const v = document.getElementById('player');
        v.muted = true; v.addEventListener('seeked', () => done(), {once: true}); v.currentTime = 2.5; })""")
    assert abs(await page.evaluate("document.getElementById('player').currentTime") - 2.5) < 0.6
    await page.evaluate("document.getElementById('player').play().catch(() => {})")
    await asyncio.sleep(0.5)
    await _shot(page, "07-recording-play")
    recording_url = page.url

    # a case with a long-term category, then tag the recording to it
    await page.goto(base + "/cases")
    await page.fill('#newcase input[name="number"]', "农执〔2026〕7号")
    await page.fill('#newcase input[name="title"]', "无证经营农药案")
    await page.select_option('#newcase select[name="category"]', "seizure")
    await page.click('#newcase button[type="submit"]')
    await page.wait_for_url("**/cases/*")
    case_url = page.url
    await page.goto(recording_url)
    await page.select_option("#tagcase", label="农执〔2026〕7号 无证经营农药案")
    await page.click('#tagform button[type="submit"]')
    await page.wait_for_selector("#tagged")
    badges = await page.inner_text(".card .badge.case")
    assert "农执〔2026〕7号" in badges and "查封扣押" in await page.inner_text("body")
    await _shot(page, "08-recording-tagged")
    await page.goto(case_url)
    assert await page.locator("table.grid tbody tr").count() == 1
    await _shot(page, "09-case")

    # burn the case to a pseudo-drive; watch it reach "verified"
    appliance._runner.app[BURNS].pseudo_drives = 1
    await page.click("text=刻录本案")
    await page.wait_for_url("**/burn?case=*")
    await page.select_option('select[name="medium"]', "cd")
    await page.click("#planbtn")
    await page.wait_for_selector("#plan")
    await _shot(page, "10-burn-plan")
    await page.click("#startbtn")
    await page.wait_for_url("**/burn/jobs/*")
    await _until(page, "document.getElementById('burnlive').dataset.state === 'done'", 120)
    assert "已校验" in await page.inner_text("#jobphase") and "已校验" in await page.inner_text("table.grid")
    assert await page.evaluate("document.getElementById('jobprogress').value") == 100
    await _shot(page, "11-burn-verified")
    await page.goto(base + "/discs")
    await _shot(page, "12-disc-register")
    actions = {r["action"] for r in harness.rows("SELECT action FROM audit_log")}
    assert {"login.failed", "login", "recording.search", "recording.view", "recording.play",
            "case.create", "recording.tag", "burn.start", "disc.verified", "burn.done"} <= actions


async def test_the_other_pages_look_right(station):
    """Screenshots of the supervision and admin pages, in Chinese and in English."""
    appliance, harness, base, browser, tmp_path = station
    source = await asyncio.to_thread(_camera, tmp_path, "DSJ0001", "张伟", 2)
    await harness.ingest(1, source)
    await appliance.refresh_space()
    page = await browser.new_page(viewport={"width": 1366, "height": 768})
    await _login(page, base, "admin")
    for path, name in (("/audit", "13-audit"), ("/health", "14-health"), ("/admin/users", "15-users"),
                       ("/admin/settings", "16-settings"), ("/cases", "17-cases")):
        await page.goto(base + path)
        await _shot(page, name)
    await page.goto(base + "/lang/en?next=/recordings")
    assert "Recordings" in await page.inner_text("h1")
    await _shot(page, "18-recordings-en")
    officer = await browser.new_page(viewport={"width": 1024, "height": 768})
    await _login(officer, base, "officer")
    assert "您只能查看本人记录仪的录像" in await officer.inner_text("body")
    await _shot(officer, "19-officer-own")
    forbidden = await officer.goto(base + "/audit")
    assert forbidden.status == 403 and "无权访问" in await officer.inner_text("h1")
