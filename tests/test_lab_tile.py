"""The JupyterLab mode: carta-hub's `carta` entry in a real Jupyter Server with
jupyter-server-proxy: the launcher tile, and CARTA proxied at <base_url>/carta/."""

import asyncio
import os
import signal
import ssl
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
import trustme
import websockets
from carta_standin.icd import EventType
from helpers.carta import file_list, register
from helpers.frames import exchange_both_ways, install_echo_backend
from helpers.hub import FRONTEND, VENV_BIN
from helpers.jupyter import start_jupyter
from helpers.ports import wait_for

from carta_hub.server.activity import PUBLISH_SECONDS


@pytest.fixture(scope="module")
def lab(open_tmp, hub_unix_user):
    server = start_jupyter(
        open_tmp,
        "/user/a.student/",
        user=hub_unix_user.pw_name,
        args=[f"--CartaBackend.executable={install_echo_backend(open_tmp)}"],
    )
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
    server = start_jupyter(
        open_tmp,
        "/user/tls/",
        user=hub_unix_user.pw_name,
        args=[f"--CartaBackend.executable={install_echo_backend(open_tmp)}"],
        tls=(folder / "server.pem", folder / "ca.pem"),
    )
    yield server
    server.stop()


async def test_tile_works_when_the_server_speaks_tls(tls_lab):
    url = tls_lab.url.replace("https://", "wss://") + "carta/"
    headers = {"Authorization": f"token {tls_lab.token}"}
    context = ssl.create_default_context(cafile=tls_lab.verify)
    async with websockets.connect(
        url, additional_headers=headers, max_size=None, ssl=context, open_timeout=30
    ) as ws:
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
    server = start_jupyter(
        home,
        f"/user/{quote(name, safe='@~')}/",
        user=hub_unix_user.pw_name,
        args=[f"--CartaBackend.executable={slow}", f"--CartaBackend.frontend_folder={FRONTEND}"],
    )
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


# carta-hub's extension under a name that sorts after jupyter_server_proxy: Jupyter Server
# loads extensions in alphabetical order, so this one loads last.
LATE_EXTENSION = """import sys
from carta_hub.server import jupyterlab
sys.modules[__name__] = jupyterlab
"""


@pytest.fixture(scope="module")
def late_lab(open_tmp, hub_unix_user):
    folder = open_tmp / "late"
    folder.mkdir()
    (folder / "zz_carta_tile.py").write_text(LATE_EXTENSION)
    server = start_jupyter(
        open_tmp,
        "/user/late/",
        user=hub_unix_user.pw_name,
        args=[
            f"--CartaBackend.executable={install_echo_backend(open_tmp)}",
            "--ServerApp.jpserver_extensions=carta_hub.server.jupyterlab=False",
            "--ServerApp.jpserver_extensions=zz_carta_tile=True",
        ],
        env={"PYTHONPATH": str(folder)},
    )
    yield server
    server.stop()


async def test_tile_url_does_not_depend_on_extension_order(late_lab):
    """The tile opens the URL its launcher entry names (path_info), which carta-hub's
    extension serves also when it loads after jupyter-server-proxy."""
    log = late_lab.log()
    assert log.index("jupyter_server_proxy | extension was successfully loaded") < log.index(
        "zz_carta_tile | extension was successfully loaded"
    )
    info = late_lab.get("server-proxy/servers-info").json()
    (carta,) = [s for s in info["server_processes"] if s["name"] == "carta"]
    url = late_lab.url.replace("http://", "ws://") + carta["launcher_entry"]["path_info"]
    headers = {"Authorization": f"token {late_lab.token}"}
    async with websockets.connect(url, additional_headers=headers) as ws:
        await ws.send(b"cursor")
        assert await ws.recv() == b"cursor"


# Loaded by the server at start (PYTHONPATH): notes each call into tornado, Jupyter Server or
# jupyter-server-proxy made on a websocket relay thread (tunnel.py's "carta-tunnel").
WATCH_RELAY_THREADS = """import threading
UPSTREAM = ("/tornado/", "/jupyter_server/", "/jupyter_server_proxy/")

def watch(frame, event, arg):
    if event == "call" and threading.current_thread().name == "carta-tunnel":
        if any(part in frame.f_code.co_filename for part in UPSTREAM):
            with open({log!r}, "a") as f:
                f.write(f"{{frame.f_code.co_filename}} {{frame.f_code.co_name}}\\n")

threading.setprofile(watch)
"""


@pytest.fixture(scope="module")
def watched_lab(open_tmp, hub_unix_user):
    folder = open_tmp / "watched"
    folder.mkdir()
    calls = folder / "upstream-calls.log"
    calls.touch(mode=0o666)
    calls.chmod(0o666)
    (folder / "sitecustomize.py").write_text(WATCH_RELAY_THREADS.format(log=str(calls)))
    server = start_jupyter(
        open_tmp,
        "/user/watched/",
        user=hub_unix_user.pw_name,
        args=[f"--CartaBackend.executable={install_echo_backend(open_tmp)}"],
        env={"PYTHONPATH": str(folder)},
    )
    yield server, calls
    server.stop()


def last_activity(lab):
    """The Jupyter Server's last activity, which jupyterhub-singleuser reports to the Hub
    (asked without counting as activity itself)."""
    return lab.get("api/status?no_track_activity=1").json()["last_activity"]


async def test_tile_frames_are_activity_pings_are_not(watched_lab):
    """Binary frames from the browser count as the Jupyter Server's activity, CARTA's PINGs
    do not; the relay threads that see them call no tornado or jupyter-server-proxy code."""
    lab, calls = watched_lab
    url = lab.url.replace("http://", "ws://") + "carta/"
    headers = {"Authorization": f"token {lab.token}"}
    async with websockets.connect(url, additional_headers=headers, max_size=None) as ws:
        await exchange_both_ways(ws, 5 * 2**20)
        await asyncio.sleep(PUBLISH_SECONDS + 1)
        before = await asyncio.to_thread(last_activity, lab)
        for _ in range(PUBLISH_SECONDS + 1):
            await ws.send("PING")
            await asyncio.sleep(1)
        assert await asyncio.to_thread(last_activity, lab) == before
        await ws.send(b"cursor")
        assert await ws.recv() == b"cursor"
        await asyncio.to_thread(
            wait_for,
            lambda: last_activity(lab) != before,
            PUBLISH_SECONDS + 5,
            "the frame's activity in the server",
        )
    assert calls.read_text() == ""


def gone(pid):
    """The process ended (a zombie nobody reaps counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX"
    except FileNotFoundError:
        return True


def backend_of(pid):
    """The PID of the process ``pid`` started (the tile's backend)."""
    children = []
    for task in os.listdir(f"/proc/{pid}/task"):
        children += Path(f"/proc/{pid}/task/{task}/children").read_text().split()
    (child,) = children
    return int(child)


async def test_backend_ends_with_a_killed_jupyter_server(open_tmp, hub_unix_user):
    """A Jupyter Server has threads; when it is killed, the tile's backend goes too."""
    (open_tmp / "killed").mkdir()
    os.chown(open_tmp / "killed", hub_unix_user.pw_uid, hub_unix_user.pw_gid)
    lab = start_jupyter(
        open_tmp / "killed",
        "/user/killed/",
        user=hub_unix_user.pw_name,
        args=[f"--CartaBackend.executable={install_echo_backend(open_tmp)}"],
    )
    try:
        url = lab.url.replace("http://", "ws://") + "carta/"
        headers = {"Authorization": f"token {lab.token}"}
        async with websockets.connect(url, additional_headers=headers) as ws:
            await ws.send(b"cursor")
            assert await ws.recv() == b"cursor"
            backend = backend_of(lab.proc.pid)
            assert "echo_backend" in Path(f"/proc/{backend}/cmdline").read_text()
            os.kill(lab.proc.pid, signal.SIGKILL)
            lab.proc.wait()
        deadline = time.monotonic() + 10
        while not gone(backend) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert gone(backend), "the backend outlived its server"
    finally:
        lab.stop()
