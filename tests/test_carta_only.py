"""carta-hub-singleuser under a real Hub + configurable-http-proxy, with the stand-in
backend (carta-standin, not CARTA) and the real carta-frontend 6.0.0 files."""

import subprocess
import sys
import time
from urllib.parse import quote

import pytest
import requests
import websockets
from carta_standin.icd import EventType
from helpers.carta import file_list, register
from helpers.client import connect, open_carta
from helpers.hub import SAME_USER_CARTA
from helpers.ports import wait_for
from helpers.procs import backend_sockets

USERNAMES = ["alice", "a.student", "jo@uni.edu"]


@pytest.fixture(scope="module")
def hub(hub_factory, hub_unix_user):
    hub = hub_factory(
        SAME_USER_CARTA
        + """
c.Spawner.args = ["--CartaSingleUserApp.activity_interval=1"]
"""
    )
    for name in USERNAMES:  # a file in each home, for the file browser
        home = hub.workdir / "homes" / name
        home.mkdir(parents=True, exist_ok=True)
        (home / f"{name}-cube.fits").write_bytes(b"SIMPLE  =                    T" + b" " * 2850)
        subprocess.run(["chown", "-R", hub_unix_user.pw_name, str(home)], check=True)
    return hub


@pytest.fixture(scope="module")
def sessions(hub):
    """Each user's logged-in browser session, with their CARTA server running."""
    result = {}
    for name in USERNAMES:
        hub.start_server(name)
        result[name] = hub.login(name)
    return result


@pytest.mark.parametrize("name", USERNAMES)
def test_frontend_and_config_under_own_prefix(hub, sessions, name):
    page = open_carta(hub, sessions[name], name)
    assert page.status_code == 200
    assert "<title>CARTA</title>" in page.text
    config = sessions[name].get(hub.user_url(name, "config")).json()
    assert config["apiAddress"] == f"/user/{quote(name, safe='@~')}/api"


@pytest.mark.parametrize("name", USERNAMES)
def test_preferences_round_trip_over_site_defaults(hub, sessions, name):
    session = sessions[name]
    open_carta(hub, session, name)
    url = hub.user_url(name, "api/database/preferences")
    fresh = session.get(url).json()["preferences"]
    assert fresh["telemetryMode"] == "none" and fresh["telemetryConsentShown"] is True
    assert fresh["checkNewRelease"] is False
    r = session.put(url, json={"colormap": "viridis", "telemetryMode": "usage"})
    assert r.status_code == 200, r.text
    stored = session.get(url).json()["preferences"]
    assert stored["colormap"] == "viridis"
    assert stored["telemetryMode"] == "usage"  # the user's own choice beats the site default
    assert stored["telemetryConsentShown"] is True


@pytest.mark.parametrize("name", USERNAMES)
async def test_icd_handshake_and_file_list(hub, sessions, name):
    open_carta(hub, sessions[name], name)
    async with connect(hub, sessions[name], name) as ws:
        event, _, _, ack = await register(ws)
        assert event == EventType.REGISTER_VIEWER_ACK and ack.success
        event, _, _, listing = await file_list(ws)
    assert event == EventType.FILE_LIST_RESPONSE and listing.success
    assert f"{name}-cube.fits" in [f.name for f in listing.files]


def test_other_users_session_is_refused(hub, sessions):
    alice = sessions["alice"]
    r = alice.get(hub.user_url("a.student", "api/database/preferences"), allow_redirects=True)
    assert r.status_code == 403 or "preferences" not in r.text


async def test_other_users_websocket_is_refused(hub, sessions):
    open_carta(hub, sessions["alice"], "alice")
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with connect(hub, sessions["alice"], "a.student"):
            pass
    assert refused.value.response.status_code in (302, 403)


def test_backend_is_loopback_only_and_needs_the_token(hub, sessions):
    sockets = wait_for(backend_sockets, 10, "the backends to listen")
    assert len({pid for _, _, pid in sockets}) >= len(USERNAMES)
    assert {address for address, _, _ in sockets} == {"127.0.0.1"}
    for _, port, _ in sockets:
        r = requests.get(f"http://127.0.0.1:{port}/api/database/preferences")
        assert r.status_code == 403
        r = requests.get(
            f"http://127.0.0.1:{port}/api/database/preferences",
            headers={"carta-auth-token": "guessed"},
        )
        assert r.status_code == 403


@pytest.mark.parametrize("token", [None, "guessed"])
async def test_direct_websocket_without_the_token_fails(hub, sessions, token):
    _, port, _ = wait_for(backend_sockets, 10, "a backend")[0]
    url = f"ws://127.0.0.1:{port}/" + (f"?token={token}" if token else "")
    with pytest.raises(
        (websockets.InvalidMessage, websockets.InvalidStatus, websockets.ConnectionClosed)
    ):
        async with websockets.connect(url) as ws:
            await register(ws)


def last_activity(hub, name):
    return hub.server(name)["last_activity"]


async def test_activity_reported_only_for_real_use(hub, sessions):
    name = "alice"
    open_carta(hub, sessions[name], name)
    time.sleep(2.5)  # the page load's activity is reported within one 1-s interval
    before = last_activity(hub, name)
    time.sleep(3)  # idle across three report intervals: nothing may move
    assert last_activity(hub, name) == before
    async with connect(hub, sessions[name], name) as ws:
        await register(ws)
        await file_list(ws)
    moved = wait_for(lambda: last_activity(hub, name) != before, 10, "activity to reach the Hub")
    assert moved


def test_server_defers_the_hubs_database_model_until_used():
    """carta-hub-singleuser's entry point leaves jupyterhub.orm/roles unloaded (memory), yet
    they work if anything uses them."""
    probe = """
import sys
from carta_hub.server import main as entry
sys.meta_path.insert(0, entry.HubOnlyFinder())
import carta_hub.server.app
lazy = {m: type(sys.modules[m]).__name__ for m in sorted(entry.HUB_ONLY)}
print(lazy, 'alembic' in sys.modules, sys.modules['jupyterhub.orm'].User.__tablename__)
"""
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == [
        "{'jupyterhub.orm':",
        "'_LazyModule',",
        "'jupyterhub.roles':",
        "'_LazyModule'}",
        "False",
        "users",
    ], out
