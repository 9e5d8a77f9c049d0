"""/metrics on the web listener and on its own listener, with a bearer token and mutual TLS."""

import re
import shutil
import ssl
import subprocess
import time

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from appliance.daemon import Appliance
from appliance.vault.base import open_folders
from tests.support.appliance import make_config

TOKEN = "s3cret-token-for-hq-prometheus-0123"


@pytest.fixture
async def running(tmp_path):
    started: list[Appliance] = []

    async def start(**metrics):
        config = make_config(tmp_path, web={"host": "127.0.0.1", "port": 0},
                             metrics={"listen": "127.0.0.1:0", **metrics})
        appliance = Appliance(config)
        await appliance.start(udev=False)
        started.append(appliance)
        return appliance

    yield start
    for appliance in started:
        await appliance.stop()
    open_folders(tmp_path)


async def test_bearer_token_on_the_metrics_listener(running, tmp_path):
    token_file = tmp_path / "metrics.token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    app = await running(bearer_token_file=str(token_file))
    url = f"http://127.0.0.1:{app.monitor.listen_port}/metrics"
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as r:
            assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
        async with http.get(url, headers={"Authorization": "Bearer wrong-token-wrong-token"}) as r:
            assert r.status == 401
        async with http.get(url, headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain; version=")
            text = await r.text()
        async with http.get(f"http://127.0.0.1:{app.monitor.listen_port}/api/v1/slots",
                            headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 404  # the metrics listener serves nothing else
        # With a token configured, the web listener's copy asks for it too.
        async with http.get(f"http://127.0.0.1:{app.bound_port}/metrics") as r:
            assert r.status == 401
        async with http.get(f"http://127.0.0.1:{app.bound_port}/metrics",
                            headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 200
    names = {f.name for f in text_string_to_metric_families(text)}
    assert "appliance_build_info" in names and "appliance_slot_state" in names


def _openssl(*args: str, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(folder):
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
             "-days", "2", "-subj", "/CN=HQ test CA", cwd=folder)
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=folder)
        (folder / f"{name}.ext").write_text(ext + "\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=folder)


async def test_mutual_tls_on_the_metrics_listener(running, tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make test certificates")
    pki = tmp_path / "pki"
    pki.mkdir()
    make_pki(pki)
    app = await running(tls={"cert_file": str(pki / "server.crt"), "key_file": str(pki / "server.key"),
                             "client_ca_file": str(pki / "ca.crt")})
    url = f"https://127.0.0.1:{app.monitor.listen_port}/metrics"
    with_cert = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    with_cert.load_cert_chain(str(pki / "client.crt"), str(pki / "client.key"))
    without_cert = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    async with aiohttp.ClientSession() as http:
        async with http.get(url, ssl=with_cert) as r:
            assert r.status == 200 and "appliance_build_info" in await r.text()
        with pytest.raises(aiohttp.ClientError):
            async with http.get(url, ssl=without_cert) as r:
                await r.read()


async def test_scrape_answers_fast_while_slots_copy(running, tmp_path):
    """Client-side time of a /metrics request while a camera is being ingested."""
    app = await running()
    from tests.support.appliance import Harness

    h = Harness(app)
    h.register("CAM1")
    cam = tmp_path / "cam"
    (cam / "DCIM").mkdir(parents=True)
    (cam / "DEVICE.TXT").write_text("SN=CAM1\n")
    for i in range(40):
        (cam / "DCIM" / f"c{i:03d}.mp4").write_bytes(b"\x00\x01" * (1 << 20))
    url = f"http://127.0.0.1:{app.monitor.listen_port}/metrics"
    times = []
    async with aiohttp.ClientSession() as http:
        h.dock(1, cam)
        while not app._idle.is_set() or not times:
            t0 = time.perf_counter()
            async with http.get(url) as r:
                await r.read()
            times.append(time.perf_counter() - t0)
        await app.wait_idle()
    times.sort()
    p95 = times[int(len(times) * 0.95) - 1] if len(times) > 1 else times[0]
    print(f"/metrics during ingest: {len(times)} scrapes, median {times[len(times) // 2] * 1000:.1f} ms, "
          f"p95 {p95 * 1000:.1f} ms, max {times[-1] * 1000:.1f} ms")
    assert p95 < 0.05


@pytest.mark.parametrize("section, message", [
    ({"metrics": {"listen": "9108"}}, "metrics.listen: '9108': expected HOST:PORT"),
    ({"metrics": {"listen": "0.0.0.0:99999"}}, "expected HOST:PORT"),
    ({"metrics": {"bearer_token_file": "metrics.token"}}, "metrics.bearer_token_file: 'metrics.token' must be an absolute path"),
    ({"metrics": {"tls": {"cert_file": "/etc/a.crt"}}}, "metrics.tls.key_file"),
    ({"station": {"end_of_day": 1080}}, "station.end_of_day: 1080: expected a quoted local time"),
    ({"station": {"end_of_day": "25:00"}}, "station.end_of_day"),
])
def test_bad_metrics_and_end_of_day_settings_are_refused_with_the_key(section, message):
    from appliance.config import parse_config
    from appliance.errors import ConfigError

    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(section)


def test_good_settings_parse():
    from appliance.config import parse_config

    config = parse_config({"station": {"end_of_day": "17:30"}, "metrics": {"listen": "[::1]:9108"}})
    assert str(config.station.end_of_day_time) == "17:30:00"
    assert config.metrics.host_port == ("::1", 9108)
