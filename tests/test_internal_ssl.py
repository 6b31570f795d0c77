"""carta-hub-singleuser under JupyterHub's ``internal_ssl``: TLS with client certificates
between the Hub, configurable-http-proxy and the CARTA-only server (the stand-in backend
``carta-standin``, not CARTA)."""

import asyncio
import json
import os
import secrets
import signal
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

import pytest
import requests
import trustme
from carta_standin.icd import EventType
from helpers.carta import file_list, register
from helpers.client import connect, open_carta
from helpers.hub import SAME_USER_CARTA, VENV_BIN
from helpers.ports import wait_for

PROXY_TOKEN = secrets.token_hex(16)
NAME = "alice"


@pytest.fixture(scope="module")
def hub(hub_factory, hub_unix_user):
    hub = hub_factory(
        SAME_USER_CARTA
        + """
c.Spawner.args = ["--CartaSingleUserApp.activity_interval=1"]
""",
        internal_ssl=True,
        env={"CONFIGPROXY_AUTH_TOKEN": PROXY_TOKEN},
    )
    home = hub.workdir / "homes" / NAME
    home.mkdir(parents=True)
    (home / "cube.fits").write_bytes(b"SIMPLE  =                    T" + b" " * 2850)
    subprocess.run(["chown", "-R", hub_unix_user.pw_name, str(home)], check=True)
    return hub


def route_target(hub, name):
    """Where configurable-http-proxy sends /user/NAME (asked through its TLS API)."""
    r = requests.get(
        f"{hub.proxy_api}/api/routes",
        timeout=5,
        **hub.proxy_api_tls,
        headers={"Authorization": f"token {PROXY_TOKEN}"},
    )
    r.raise_for_status()
    return r.json().get(f"/user/{name}", {}).get("target")


def activity(hub, name):
    return hub.server(name)["last_activity"]


async def carta_files(hub, session, name):
    """REGISTER_VIEWER and FILE_LIST through CARTA's websocket: the file names."""
    async with connect(hub, session, name) as ws:
        event, _, _, ack = await register(ws)
        assert event == EventType.REGISTER_VIEWER_ACK and ack.success
        event, _, _, listing = await file_list(ws)
    assert event == EventType.FILE_LIST_RESPONSE and listing.success
    return [f.name for f in listing.files]


def test_spawn_carta_and_stop_over_internal_ssl(hub):
    hub.start_server(NAME)
    target = urlparse(route_target(hub, NAME))
    assert target.scheme == "https", target  # the Hub checked the server over TLS

    session = hub.login(NAME)
    page = open_carta(hub, session, NAME)  # the server's OAuth token check: TLS to the Hub
    assert page.status_code == 200 and "<title>CARTA</title>" in page.text
    time.sleep(2.5)  # the page's activity is reported (1-s interval)
    before = activity(hub, NAME)
    assert "cube.fits" in asyncio.run(carta_files(hub, session, NAME))
    # the activity report (a POST to the Hub, which requires a client certificate) arrives
    wait_for(lambda: activity(hub, NAME) != before, 10, "activity to reach the Hub")

    plain = f"http://127.0.0.1:{target.port}/user/{NAME}/"
    with pytest.raises(requests.ConnectionError):  # no plain HTTP
        requests.get(plain, timeout=5)
    with pytest.raises(requests.exceptions.SSLError):  # no TLS without a client certificate
        requests.get(
            plain.replace("http:", "https:"),
            timeout=5,
            verify=str(hub.workdir / "certs" / "notebooks-ca_trust.crt"),
        )

    hub.stop_server(NAME)
    assert route_target(hub, NAME) is None


@pytest.fixture
def fake_hub(tmp_path):
    """An HTTPS 'Hub API' that, like the Hub under internal_ssl, requires a client
    certificate of its CA; records the JSON bodies posted to it."""
    ca = trustme.CA()
    files = {}
    for role in ("hub", "server"):
        cert = ca.issue_cert("127.0.0.1")
        files[role] = (tmp_path / f"{role}.key", tmp_path / f"{role}.crt")
        cert.private_key_pem.write_to_path(str(files[role][0]))
        cert.cert_chain_pems[0].write_to_path(str(files[role][1]))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.crt"))
    posted = []

    class Record(BaseHTTPRequestHandler):
        def do_POST(self):
            posted.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(201)
            self.end_headers()

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(tmp_path / "ca.crt"))
    context.load_cert_chain(str(files["hub"][1]), str(files["hub"][0]))
    context.verify_mode = ssl.CERT_REQUIRED
    server = ThreadingHTTPServer(("127.0.0.1", 0), Record)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    files["port"] = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield files, posted, tmp_path
    server.shutdown()
    server.server_close()


def test_port_report_uses_the_client_certificate(fake_hub):
    """On Slurm the server reports its port (POST $JUPYTERHUB_API_URL/batchspawner); under
    internal_ssl that POST carries the server's certificate, and the server then speaks
    TLS only, to clients with a certificate of the internal CA."""
    files, posted, folder = fake_hub
    key, cert = files["server"]
    env = {
        **os.environ,
        "JUPYTERHUB_API_URL": f"https://127.0.0.1:{files['port']}/hub/api",
        "JUPYTERHUB_API_TOKEN": "t",
        "JUPYTERHUB_USER": NAME,
        "HOME": str(folder),
        "JUPYTERHUB_SERVICE_PREFIX": f"/user/{NAME}/",
        "JUPYTERHUB_SSL_KEYFILE": str(key),
        "JUPYTERHUB_SSL_CERTFILE": str(cert),
        "JUPYTERHUB_SSL_CLIENT_CA": str(folder / "ca.crt"),
    }
    log = folder / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                str(VENV_BIN / "carta-hub-singleuser"),
                "--CartaSingleUserApp.report_port=True",
                "--ip=127.0.0.1",
                f"--CartaBackend.executable={VENV_BIN / 'carta-standin'}",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: posted or proc.poll() is not None, 30, "the port report")
        assert posted, log.read_text()
        port = json.loads(posted[0])["port"]
        url = f"https://127.0.0.1:{port}/user/{NAME}/"
        r = requests.get(
            url,
            cert=(str(files["hub"][1]), str(files["hub"][0])),
            verify=str(folder / "ca.crt"),
            allow_redirects=False,
            timeout=10,
        )
        assert r.status_code == 302  # to the Hub's login: TLS and the client certificate passed
        with pytest.raises(requests.ConnectionError):
            requests.get(url.replace("https:", "http:"), timeout=5)
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(url, verify=str(folder / "ca.crt"), timeout=5)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_incomplete_internal_ssl_files_are_a_clear_error(tmp_path):
    """A spawner that passes only some of the files (a custom move_certs gone wrong): the
    server does not fall back to plain HTTP; it stops, naming what is missing."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_SSL_")}
    env.update(
        JUPYTERHUB_USER=NAME,
        HOME=str(tmp_path),
        JUPYTERHUB_SSL_CERTFILE=str(tmp_path / "server.crt"),
    )
    result = subprocess.run(
        [
            str(VENV_BIN / "carta-hub-singleuser"),
            "--ip=127.0.0.1",
            f"--CartaBackend.executable={VENV_BIN / 'carta-standin'}",
        ],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert "JUPYTERHUB_SSL_KEYFILE, JUPYTERHUB_SSL_CLIENT_CA not set" in result.stderr
