"""The JupyterLab mode: carta-hub's `carta` entry in a real Jupyter Server with
jupyter-server-proxy: the launcher tile, and CARTA proxied at <base_url>/carta/."""


import ssl
import subprocess
from urllib.parse import quote

import pytest
import requests
import trustme
import websockets

from carta_standin.icd import EventType
from helpers.carta import file_list, register
from helpers.hub import FRONTEND, VENV_BIN
from helpers.jupyter import start_jupyter
from helpers.frames import exchange_both_ways, install_echo_backend


@pytest.fixture(scope="module")
def lab(open_tmp, hub_unix_user):
    server = start_jupyter(open_tmp, "/user/a.student/", user=hub_unix_user.pw_name, args=[
        f"--CartaBackend.executable={install_echo_backend(open_tmp)}"])
    yield server
    server.stop()


def test_launcher_tile_is_carta(lab):
    info = lab.get("server-proxy/servers-info").json()
    carta = next(s for s in info["server_processes"] if s["name"] == "carta")
    assert carta["launcher_entry"]["title"] == "CARTA"
    assert carta["new_browser_tab"] is True
    icon = lab.get("server-proxy/icon/carta")
    assert icon.status_code == 200 and b"<svg" in icon.content


async def test_large_frames_pass_the_tile_both_ways(lab):
    url = lab.url.replace("http://", "ws://") + "carta/"
    headers = {"Authorization": f"token {lab.token}"}
    async with websockets.connect(url, additional_headers=headers, max_size=None) as ws:
        await exchange_both_ways(ws, 64 * 2**20)


@pytest.fixture(scope="module")
def tls_lab(open_tmp, hub_unix_user):
    """A Jupyter Server serving HTTPS itself (as with JupyterHub's internal_ssl)."""
    ca, folder = trustme.CA(), open_tmp / "tls"
    folder.mkdir()
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(folder / "server.pem")
    ca.cert_pem.write_to_path(folder / "ca.pem")
    subprocess.run(["chown", "-R", hub_unix_user.pw_name, str(folder)], check=True)
    server = start_jupyter(open_tmp, "/user/tls/", user=hub_unix_user.pw_name, args=[
        f"--CartaBackend.executable={install_echo_backend(open_tmp)}"],
        tls=(folder / "server.pem", folder / "ca.pem"))
    yield server
    server.stop()


async def test_tile_works_when_the_server_speaks_tls(tls_lab):
    url = tls_lab.url.replace("https://", "wss://") + "carta/"
    headers = {"Authorization": f"token {tls_lab.token}"}
    context = ssl.create_default_context(cafile=tls_lab.verify)
    async with websockets.connect(url, additional_headers=headers, max_size=None,
                                  ssl=context, open_timeout=30) as ws:
        await ws.send(b"cursor")
        assert await ws.recv() == b"cursor"
        await exchange_both_ways(ws, 5 * 2**20)


@pytest.fixture(scope="module", params=["alice", "a.student", "jo@uni.edu"])
def lab_carta(request, open_tmp, hub_unix_user):
    """The tile with the stand-in backend (carta-standin, not CARTA); for a.student the
    backend takes over 20 s to start, as a real one can on a busy node."""
    name = request.param
    home = open_tmp / name
    home.mkdir()
    (home / "cube.fits").write_bytes(b"SIMPLE  =                    T" + b" " * 2850)
    delay = 21 if name == "a.student" else 0
    slow = open_tmp / f"slow-standin-{delay}"
    slow.write_text(f'#!/bin/sh\nsleep {delay}\nexec {VENV_BIN}/carta-standin "$@"\n')
    slow.chmod(0o755)
    subprocess.run(["chown", "-R", hub_unix_user.pw_name, str(home)], check=True)
    server = start_jupyter(home, f"/user/{quote(name, safe='@~')}/", user=hub_unix_user.pw_name,
                           args=[f"--CartaBackend.executable={slow}",
                                 f"--CartaBackend.frontend_folder={FRONTEND}"])
    yield name, server
    server.stop()


def test_tile_serves_frontend_and_config_under_own_prefix(lab_carta):
    name, lab = lab_carta
    page = lab.get("carta/", timeout=120)
    assert page.status_code == 200 and "<title>CARTA</title>" in page.text
    config = lab.get("carta/config").json()
    assert config["apiAddress"] == f"/user/{quote(name, safe='@~')}/carta/api"


def test_tile_preferences_round_trip(lab_carta):
    _, lab = lab_carta
    url = lab.url + "carta/api/database/preferences"
    headers = {"Authorization": f"token {lab.token}"}
    assert requests.put(url, json={"colormap": "inferno"}, headers=headers).status_code == 200
    assert requests.get(url, headers=headers).json()["preferences"]["colormap"] == "inferno"


async def test_tile_icd_handshake_and_file_list(lab_carta):
    _, lab = lab_carta
    url = lab.url.replace("http://", "ws://") + "carta/"
    headers = {"Authorization": f"token {lab.token}"}
    async with websockets.connect(url, additional_headers=headers) as ws:
        event, _, _, ack = await register(ws)
        assert event == EventType.REGISTER_VIEWER_ACK and ack.success
        _, _, _, listing = await file_list(ws)
    assert "cube.fits" in [f.name for f in listing.files]
