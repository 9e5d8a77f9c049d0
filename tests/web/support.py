"""Helpers of the web tests: a real appliance, its web application on a test server,
accounts of every role, and recordings put into the vault and the catalog."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from appliance.catalog import registry
from appliance.catalog import sessions as cat
from appliance.catalog import users
from appliance.catalog.users import ROLES
from appliance.daemon import Appliance
from appliance.timeutil import utcnow
from appliance.vault.hashing import hash_bytes
from appliance.web.app import make_app

PASSWORD = "correct horse battery"
_HASH = users.hash_password(PASSWORD)   # one argon2 hash for every test account: fast set-up
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def add_accounts(appliance: Appliance, officer: str = "张伟") -> None:
    """One account per role, named after the role; the officer account is tied to ``officer``."""
    def work(conn):
        for role in ROLES:
            users.add_user(conn, role, role, _HASH, display_name=f"{role} user",
                           officer=officer if role == "officer" else None)
    appliance.catalog.run(work)


def seed_recording(appliance: Appliance, *, serial: str = "CAM001", officer: str | None = "张伟",
                   name: str = "DCIM/100MEDIA/clip.mp4", data: bytes | None = None,
                   session_id: str | None = None) -> int:
    """A committed recording, its file in the vault (read-only), as ingest would leave it."""
    data = data if data is not None else os.urandom(64_000)
    catalog, vault = appliance.catalog, appliance.vault
    if officer:
        catalog.run(registry.add_device, serial, officer=officer, model="DSJ-T", brand="测试")
    device = catalog.run(registry.get_device, serial)
    sid = session_id or f"20260101T080000-{serial}-{os.urandom(2).hex()}"
    vault_dir = f"media/2026/01/01/{serial}/{sid}"
    path = vault.root / vault_dir / "files" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, 0o444)
    digest = hash_bytes(data).sha256
    mtime_ns = int(utcnow().timestamp() * 1e9)

    def work(conn):
        if cat.get(conn, sid) is None:
            cat.create(conn, cat.NewSession(sid, serial, device.id if device else None,
                                            device.officer_id if device else None, "1", "test-port-1",
                                            "generic", device is None, vault_dir))
        cat.add_verified_file(conn, sid, cat.VerifiedFile(name.encode(), name, f"{vault_dir}/files/{name}",
                                                           len(data), mtime_ns, digest))
        cat.commit(conn, sid, manifest_sha256="0" * 64, camera_newest=None, clock_drift_s=-2.5,
                   snapshot=None, camera_tz="Asia/Shanghai")
        cat.set_state(conn, sid, "done")
        return conn.execute("SELECT id FROM recordings WHERE vault_path = ?",
                            (f"{vault_dir}/files/{name}",)).fetchone()[0]
    return catalog.run(work)


@dataclass
class WebEnv:
    """The web application of a running appliance, on a local test server."""

    appliance: Appliance
    server: TestServer
    clients: list[TestClient] = field(default_factory=list)

    async def anon(self) -> TestClient:
        client = TestClient(self.server)
        await client.start_server()
        self.clients.append(client)
        return client

    async def login(self, name: str, password: str = PASSWORD) -> TestClient:
        client = await self.anon()
        await login(client, name, password, expect_ok=True)
        return client

    async def close(self) -> None:
        for c in self.clients:
            await c.close()


async def login(client: TestClient, name: str, password: str = PASSWORD, *, expect_ok: bool = False,
                ip_headers: dict | None = None):
    page = await client.get("/login")
    token = csrf_of(await page.text())
    resp = await client.post("/login", data={"csrf_token": token, "name": name, "password": password},
                             allow_redirects=False, headers=ip_headers or {})
    if expect_ok:
        assert resp.status == 303, (resp.status, await resp.text())
    return resp


async def token(client: TestClient, path: str = "/account/password") -> str:
    """The session's CSRF token, read from a page that has a form."""
    resp = await client.get(path)
    return csrf_of(await resp.text())


async def start_web(appliance: Appliance) -> WebEnv:
    server = TestServer(make_app(appliance))
    await server.start_server()
    return WebEnv(appliance, server)


