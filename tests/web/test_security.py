"""Security of the web page, generated from the route table where it can be.

Every route without a session is refused (except the public ones); every route refuses
the roles the table does not name; a route missing from the table is refused; CSRF is
enforced; path traversal is refused; names and file names are escaped; cookies carry
HttpOnly, SameSite=Strict, and Secure over TLS; failed logins lock out.
"""

from __future__ import annotations

import datetime
import re
import ssl

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from appliance.catalog import audit
from appliance.catalog.users import ROLES
from appliance.web.access import ANY_USER, PUBLIC, may
from appliance.web.app import make_app
from appliance.web.routes import ROUTES
from appliance.web.security import COOKIE_NAME, LoginThrottle, load_or_create_key
from tests.web.support import PASSWORD, csrf_of, login, seed_recording, token

PARAM = re.compile(r"\{(\w+)(?::[^}]*)?\}")
PROTECTED = [r for r in ROUTES if r.access != PUBLIC and r.method != "STATIC"]


def concrete(path: str, rid: int = 1) -> str:
    return PARAM.sub(lambda m: "en" if m.group(1) == "lang" else str(rid), path)


def test_the_table_names_every_role_group_and_public_routes_are_the_allowed_ones():
    public = {(r.method, r.path) for r in ROUTES if r.access == PUBLIC}
    assert public == {("GET", "/"), ("GET", "/board/events"), ("GET", "/api/v1/slots"),
                      ("GET", "/api/v1/health"), ("GET", "/metrics"), ("STATIC", "/static"),
                      ("GET", "/login"), ("POST", "/login"), ("GET", "/lang/{lang}")}
    for r in ROUTES:
        assert r.access in (PUBLIC, ANY_USER) or (isinstance(r.access, frozenset) and r.access <= set(ROLES)), r
    # the IT admin never reaches evidence content; the legal section changes nothing
    content = {"recording", "recording.media", "recordings"}
    assert not any(may(r.access, "it_admin") for r in ROUTES if r.name in content)
    assert not any(may(r.access, "legal") for r in ROUTES
                   if r.method == "POST" and r.access not in (PUBLIC, ANY_USER))


@pytest.mark.parametrize("route", PROTECTED, ids=lambda r: f"{r.method} {r.path}")
async def test_every_protected_route_refuses_a_request_without_a_session(web, route):
    client = await web.anon()
    await client.get("/login")   # an anonymous session with a CSRF token exists: still refused
    resp = await client.request(route.method, concrete(route.path, web.own), allow_redirects=False,
                                data={} if route.method == "POST" else None)
    if route.method == "GET":
        assert resp.status == 303 and resp.headers["Location"].startswith("/login?next="), route
    else:
        assert resp.status == 401, route
    assert "SHA-256" not in await resp.text()


ROLE_CASES = [(r, role) for r in PROTECTED for role in ROLES if not may(r.access, role)]


@pytest.mark.parametrize("route,role", ROLE_CASES, ids=lambda x: x if isinstance(x, str) else f"{x.method} {x.path}")
async def test_every_route_refuses_the_roles_the_table_does_not_name(web, route, role):
    client = await _client(web, role)
    data = {"csrf_token": await token(client)} if route.method == "POST" else None
    resp = await client.request(route.method, concrete(route.path, web.own), data=data, allow_redirects=False)
    assert resp.status == 403, (route, role, resp.status)


async def _client(web, role):
    cache = web.__dict__.setdefault("_role_clients", {})
    if role not in cache:
        cache[role] = await web.login(role)
    return cache[role]


async def test_a_route_that_is_not_in_the_table_is_refused(web):
    app = make_app(web.appliance)

    async def secret(request):
        return web_response("leak")

    app.router.add_get("/not-in-table", secret)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/not-in-table")
        assert resp.status == 403 and "leak" not in await resp.text()


def web_response(text):
    return web.Response(text=text)


async def test_the_public_routes_answer_without_a_session(web):
    client = await web.anon()
    for path in ("/", "/api/v1/slots", "/api/v1/health", "/metrics", "/static/app.css", "/login"):
        resp = await client.get(path, allow_redirects=False)
        assert resp.status == 200, path
    board = await (await client.get("/")).text()
    assert "clip" not in board and "执法记录_0001" not in board  # the board never lists recordings


async def test_csrf_is_enforced_on_every_form(web):
    client = await web.login("device_manager")
    good = await token(client)
    form = {"number": "CSRF-1", "title": "t"}
    assert (await client.post("/cases", data=form, allow_redirects=False)).status == 403
    assert (await client.post("/cases", data={**form, "csrf_token": "x" * 43}, allow_redirects=False)).status == 403
    other = await web.login("admin")
    foreign = await token(other)
    assert (await client.post("/cases", data={**form, "csrf_token": foreign}, allow_redirects=False)).status == 403
    evil = await client.post("/cases", data={**form, "csrf_token": good}, allow_redirects=False,
                             headers={"Origin": "http://evil.example"})
    assert evil.status == 403
    assert (await client.post("/cases", data={**form, "csrf_token": good}, allow_redirects=False)).status == 303
    # the header form (for scripts) works too; the login form is protected as well
    assert (await client.post("/cases", data={"number": "CSRF-2", "title": "t"}, allow_redirects=False,
                              headers={"X-CSRF-Token": good})).status == 303
    anon = await web.anon()
    assert (await anon.post("/login", data={"name": "admin", "password": PASSWORD},
                            allow_redirects=False)).status == 403
    numbers = web.harness.rows("SELECT number FROM cases ORDER BY number")
    assert [r["number"] for r in numbers] == ["CSRF-1", "CSRF-2"]


@pytest.mark.parametrize("path", [
    "/recordings/..%2f..%2f..%2fetc%2fpasswd/media", "/recordings/1%2f..%2f..%2fcatalog/media",
    "/recordings/-1/media", "/recordings/1.0/media", "/static/../app.py", "/static/%2e%2e/app.py",
    "/static/..%2fapp.py", "/static/%2e%2e%2f%2e%2e%2fcatalog%2fdb.py", "/static//etc/passwd",
    "/static/..\\app.py",
])
async def test_path_traversal_is_refused(web, path):
    client = await web.login("admin")
    resp = await client.get(path, allow_redirects=False)
    body = await resp.read()
    assert resp.status in (400, 403, 404), (path, resp.status)
    assert b"root:" not in body and b"import" not in body and b"def " not in body


async def test_a_hostile_catalog_path_never_leaves_the_vault(web):
    rid = web.own

    def corrupt(conn):  # a tampered catalog row (the triggers guard only the audit log)
        conn.execute("UPDATE recordings SET vault_path = '../../../../etc/passwd' WHERE id = ?", (rid,))
    web.appliance.catalog.run(corrupt)
    client = await web.login("admin")
    resp = await client.get(f"/recordings/{rid}/media")
    assert resp.status == 404 and b"root:" not in await resp.read()


async def test_html_in_names_and_file_names_is_escaped(web):
    hostile = '<script>alert("x")</script>'
    rid = seed_recording(web.appliance, serial="EVIL1", officer=hostile,
                         name='DCIM/<img src=x onerror=alert(1)>.MP4')
    client = await web.login("admin")
    token_ = await token(client)
    await client.post("/cases", data={"csrf_token": token_, "number": "X-1", "title": hostile})
    for path in ("/recordings", f"/recordings/{rid}", "/cases", "/audit"):
        html = await (await client.get(path)).text()
        assert "<script>alert" not in html and "<img src=x" not in html, path
    html = await (await client.get(f"/recordings/{rid}")).text()
    assert "&lt;img src=x onerror=alert(1)&gt;.MP4" in html and "&lt;script&gt;" in html
    # the board shows the officer's name as text: JSON over SSE, rendered with textContent
    web.appliance.board.update("1", state="copying", officer=hostile)
    board = await (await (await web.anon()).get("/")).text()
    assert "<script>alert" not in board and "&lt;script&gt;" in board


async def test_session_cookie_flags_over_http(web):
    client = await web.anon()
    resp = await login(client, "admin")
    cookie = resp.cookies[COOKIE_NAME]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and not cookie["secure"]
    assert resp.status == 303


async def test_session_cookie_is_secure_over_tls(web, tmp_path):
    cert, key = _self_signed(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    server = TestServer(make_app(web.appliance))
    await server.start_server(ssl=ctx)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    client_ctx.check_hostname = False
    async with TestClient(server) as client:
        page = await client.get("/login", ssl=client_ctx)
        assert page.status == 200
        raw = page.headers.getall("Set-Cookie")
        assert any("Secure" in c and "HttpOnly" in c and "SameSite=Strict" in c for c in raw), raw
        assert page.headers["Strict-Transport-Security"]


def _self_signed(folder):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    import ipaddress
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def test_security_headers_on_pages_files_and_streams(web):
    client = await web.anon()
    for path in ("/", "/login", "/static/app.css"):
        resp = await client.get(path)
        assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
        assert resp.headers["X-Frame-Options"] == "DENY" and resp.headers["X-Content-Type-Options"] == "nosniff"
    assert (await client.get("/login")).headers["Cache-Control"] == "no-store"
    admin = await web.login("admin")
    media = await admin.get(f"/recordings/{web.own}/media", headers={"Range": "bytes=0-9"})
    assert media.headers["Cache-Control"] == "no-store" and media.headers["X-Content-Type-Options"] == "nosniff"


async def test_login_throttling_locks_the_account_and_is_audited(web):
    client = await web.anon()
    for _ in range(5):
        resp = await login(client, "leader", "wrong password")
        assert resp.status == 401
    locked = await login(client, "leader", PASSWORD)       # even the right password, while locked
    assert locked.status == 429 and "请 15 分钟后再试" in await locked.text()
    other = await login(await web.anon(), "legal", PASSWORD)  # another account from the same address
    assert other.status == 303
    actions = [r["action"] for r in web.harness.rows("SELECT action FROM audit_log WHERE subject = 'leader'")]
    assert actions.count("login.failed") == 5 and "login.refused-locked" in actions
    metrics = await (await client.get("/metrics")).text()
    assert 'appliance_web_logins_total{result="failed"} 5.0' in metrics
    assert 'appliance_web_lockouts_total{kind="user"} 1.0' in metrics


def test_throttle_locks_per_address_and_unlocks_after_the_lockout():
    now = [1000.0]
    throttle = LoginThrottle(max_failures=3, lockout_s=60, window_s=300, clock=lambda: now[0])
    for i in range(8):
        throttle.failed(f"user{i}", "10.0.0.9")
    assert throttle.locked_for("someone-else", "10.0.0.9") == 0
    assert throttle.failed("user9", "10.0.0.9") == ["ip"]
    assert throttle.locked_for("anyone", "10.0.0.9") == 60
    assert throttle.locked_for("anyone", "10.0.0.8") == 0
    now[0] += 61
    assert throttle.locked_for("anyone", "10.0.0.9") == 0


async def test_logout_ends_the_cookie_everywhere(web):
    client = await web.login("device_manager")
    stolen = client.session.cookie_jar.filter_cookies(client.make_url("/"))[COOKIE_NAME].value
    t = await token(client)
    resp = await client.post("/logout", data={"csrf_token": t}, allow_redirects=False)
    assert resp.status == 303
    replay = await web.anon()
    replay.session.cookie_jar.update_cookies({COOKIE_NAME: stolen}, client.make_url("/"))
    again = await replay.get("/recordings", allow_redirects=False)
    assert again.status == 303 and again.headers["Location"].startswith("/login")
    actions = [r["action"] for r in web.harness.rows("SELECT action FROM audit_log WHERE actor = 'device_manager'")]
    assert "login" in actions and "logout" in actions


async def test_password_change_and_old_sessions_end(web):
    first = await web.login("leader")
    second = await web.login("leader")
    t = await token(second)
    resp = await second.post("/account/password", data={"csrf_token": t, "current": PASSWORD,
                                                          "new": "a new long password", "again": "a new long password"})
    assert resp.status == 200 and ("密码已修改" in await resp.text())
    assert (await second.get("/audit", allow_redirects=False)).status == 200   # this session lives on
    assert (await first.get("/audit", allow_redirects=False)).status == 303    # the other one ended
    assert (await login(await web.anon(), "leader", PASSWORD)).status == 401
    assert (await login(await web.anon(), "leader", "a new long password")).status == 303
    wrong = await second.post("/account/password", data={"csrf_token": await token(second), "current": "nope",
                                                          "new": "x" * 9, "again": "x" * 9})
    assert wrong.status == 400


async def test_open_redirects_are_refused(web):
    client = await web.anon()
    page = await client.get("/login")
    resp = await client.post("/login", data={"csrf_token": csrf_of(await page.text()), "name": "admin",
                                             "password": PASSWORD, "next": "//evil.example/x"},
                             allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/recordings"
    lang = await client.get("/lang/en?next=https://evil.example/", allow_redirects=False)
    assert lang.headers["Location"] == "/"


async def test_an_officer_sees_only_own_recordings(web):
    client = await web.login("officer")
    listing = await (await client.get("/recordings")).text()
    assert "执法记录_0001" in listing and "other_0001" not in listing
    assert (await client.get(f"/recordings/{web.own}")).status == 200
    assert (await client.get(f"/recordings/{web.other}")).status == 404
    assert (await client.get(f"/recordings/{web.other}/media")).status == 404
    sneaky = await (await client.get("/recordings?officer=999")).text()
    assert "other_0001" not in sneaky
    refused = web.harness.rows("SELECT * FROM audit_log WHERE action = 'recording.refused'")
    assert len(refused) == 2


def test_the_session_key_is_private_and_kept(tmp_path):
    key = load_or_create_key(tmp_path / "state")
    path = tmp_path / "state" / "web-session.key"
    assert path.stat().st_mode & 0o777 == 0o600 and len(key) == 32
    path.chmod(0o644)
    assert load_or_create_key(tmp_path / "state") == key
    assert path.stat().st_mode & 0o777 == 0o600


async def test_the_audit_chain_stays_intact(web):
    client = await web.login("admin")
    await client.get(f"/recordings/{web.own}")
    assert web.appliance.catalog.run(audit.verify_chain).ok
