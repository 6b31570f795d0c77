"""Faults on a real Hub + configurable-http-proxy with CARTA-only servers (the stand-in backend
``carta-standin``, NOT CARTA): what recovers by itself, how fast, and what the student sees.

1. the backend process is killed (-9): the next request restarts it, files and preferences kept,
   and an open websocket closes for the tab (as a tab gone ends the backend's session);
2. the single-user server process is killed: the Hub notices within one poll interval, removes
   the route, the student gets "Server not running" and one POST to the spawn URL restarts it;
4. configurable-http-proxy is killed: the Hub restarts it and re-adds every route by itself;
7. a read-only home: CARTA starts, the wrapper warns, preferences are kept for the session
   and the page says so.

Measured times are printed and written to ``test-artifacts/fault-times.json`` (docs/operations.md).
"""

import asyncio
import os
import re
import secrets
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests
import websockets
from carta_standin.icd import EventType
from helpers.carta import file_list, register
from helpers.client import connect, open_carta
from helpers.faults import record
from helpers.hub import SAME_USER_CARTA
from helpers.hubpages import proxy_routes
from helpers.ports import wait_for
from helpers.procs import processes

POLL = 2  # c.Spawner.poll_interval
JITTER = 0.1  # JupyterHub's default Spawner.poll_jitter
PROXY_CHECK = 1  # c.ConfigurableHTTPProxy.check_running_interval
PROXY_TOKEN = secrets.token_hex(16)
CONFIG = (
    SAME_USER_CARTA
    + f"""
c.Spawner.poll_interval = {POLL}
c.ConfigurableHTTPProxy.check_running_interval = {PROXY_CHECK}
c.JupyterHub.last_activity_interval = 2
"""
)
FITS = b"SIMPLE  =                    T" + b" " * 2850


def post_spawn(hub, session, name):
    """The "Launch server" button: one POST to the spawn URL."""
    xsrf = session.cookies.get("_xsrf", path="/hub/") or session.cookies.get("_xsrf")
    return session.post(f"{hub.url}/hub/spawn/{name}", data={"_xsrf": xsrf})


async def listing(hub, session, name):
    async with connect(hub, session, name) as ws:
        event, _, _, ack = await register(ws)
        assert event == EventType.REGISTER_VIEWER_ACK and ack.success
        event, _, _, found = await file_list(ws)
    assert event == EventType.FILE_LIST_RESPONSE and found.success
    return [f.name for f in found.files]


@pytest.fixture(scope="module")
def hub(hub_factory, hub_unix_user):
    hub = hub_factory(CONFIG, env={"CONFIGPROXY_AUTH_TOKEN": PROXY_TOKEN})
    for name in ("crash", "dies", "proxied", "tabs"):
        home = hub.workdir / "homes" / name
        home.mkdir(parents=True)
        (home / f"{name}.fits").write_bytes(FITS)
        subprocess.run(
            ["chown", "-R", hub_unix_user.pw_name, str(hub.workdir / "homes")], check=True
        )
    return hub


def home_of(hub, name):
    return hub.workdir / "homes" / name


def test_backend_crash_restarts_on_next_request(hub, artifacts):
    name = "crash"
    hub.start_server(name)
    session = hub.login(name)
    open_carta(hub, session, name)
    prefs = hub.user_url(name, "api/database/preferences")
    assert session.put(prefs, json={"colormap": "magma"}).status_code == 200
    (old,) = wait_for(lambda: processes(home_of(hub, name), "/carta-standin"), 20, "the backend")

    os.kill(old, signal.SIGKILL)
    wait_for(lambda: not processes(home_of(hub, name), "/carta-standin"), 10, "the backend gone")
    started = time.monotonic()
    r = session.get(prefs)  # nobody acts: the student's next request
    recovered = time.monotonic() - started
    assert r.status_code == 200, (r.status_code, r.text[-1000:])
    assert r.json()["preferences"]["colormap"] == "magma"
    assert f"{name}.fits" in asyncio.run(listing(hub, session, name))
    (new,) = processes(home_of(hub, name), "/carta-standin")
    assert new != old
    assert hub.server(name).get("ready")  # the Hub never saw a problem
    record(artifacts, "backend_crash_next_request", recovered)


def threads(pid):
    return int(re.search(r"Threads:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())[1])


def sessions_ended(hub):
    return hub.log().count("] Deleted. Remaining sessions")  # the backend's own log line


async def test_websocket_ends_with_the_tab_and_with_the_backend(hub):
    """A tab that goes away, even without a websocket close (a crashed browser, a lost
    network), ends the backend's session, and the wrapper keeps nothing of it; a backend that
    dies closes the tab's websocket, so CARTA's frontend shows it instead of hanging."""
    name = "tabs"
    hub.start_server(name)
    session = hub.login(name)
    open_carta(hub, session, name)
    (server,) = processes(home_of(hub, name), "/carta-hub-singleuser")
    before = threads(server)
    for _ in range(3):
        ended = sessions_ended(hub)
        ws = await connect(hub, session, name)
        await register(ws)
        ws.transport.abort()  # TCP gone, no close frame
        await asyncio.sleep(0.1)  # the event loop closes the socket
        wait_for(lambda: sessions_ended(hub) > ended, 10, "the backend's session to end")
    wait_for(lambda: threads(server) == before, 10, "the wrapper's threads back to before")

    async with connect(hub, session, name) as ws:
        await register(ws)
        (backend,) = processes(home_of(hub, name), "/carta-standin")
        os.kill(backend, signal.SIGKILL)
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)


def test_server_killed_hub_notices_and_one_click_restarts(hub, artifacts):
    name = "dies"
    hub.start_server(name)
    session = hub.login(name)
    open_carta(hub, session, name)
    prefs = hub.user_url(name, "api/database/preferences")
    assert session.put(prefs, json={"colormap": "inferno"}).status_code == 200
    assert f"/user/{name}" in proxy_routes(hub, PROXY_TOKEN)
    (server,) = processes(home_of(hub, name), "/carta-hub-singleuser")

    os.kill(server, signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: not hub.server(name), 3 * POLL, "the Hub to notice", interval=0.05)
    noticed = time.monotonic() - killed
    assert noticed <= POLL * (1 + JITTER) + 1.5, noticed  # one poll interval (+ the poll itself)
    assert f"/user/{name}" not in proxy_routes(hub, PROXY_TOKEN)
    # the backend went with its wrapper (PR_SET_PDEATHSIG), nothing is left behind
    wait_for(lambda: not processes(home_of(hub, name), "/carta-standin"), 10, "no backend")

    page = session.get(hub.user_url(name))
    assert page.status_code == 424, page.status_code
    assert "Server not running" in page.text and f"/hub/spawn/{name}" in page.text

    clicked = time.monotonic()
    r = post_spawn(hub, session, name)
    assert r.status_code == 200, r.text[-2000:]
    wait_for(lambda: hub.server(name).get("ready"), 60, "the restarted server")
    restarted = time.monotonic() - clicked
    page = open_carta(hub, session, name)
    assert page.status_code == 200 and "<title>CARTA</title>" in page.text
    assert session.get(prefs).json()["preferences"]["colormap"] == "inferno"
    record(artifacts, "local_server_killed_hub_notices", noticed)
    record(artifacts, "local_server_one_click_restart", restarted)


def test_proxy_restart_routes_come_back(hub, artifacts):
    name = "proxied"
    for other in ("crash", name):  # two routes to come back, also when this test runs alone
        if not hub.server(other).get("ready"):
            hub.start_server(other)
    session = hub.login(name)
    open_carta(hub, session, name)
    proxy_pid = hub.proxy_pid()
    os.kill(proxy_pid, signal.SIGKILL)
    killed = time.monotonic()

    def reachable():
        try:
            return session.get(hub.user_url(name, "config"), timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    wait_for(reachable, 30, "CARTA through the restarted proxy", interval=0.1)
    back = time.monotonic() - killed
    assert hub.proxy_pid() != proxy_pid
    routes = proxy_routes(hub, PROXY_TOKEN)
    assert {f"/user/{n}" for n in ("crash", "proxied")} <= set(routes)
    assert f"{name}.fits" in asyncio.run(listing(hub, session, name))
    assert "Proxy stopped with exit code" in hub.log()
    record(artifacts, "proxy_killed_routes_back", back)


def test_read_only_home_starts_with_a_warning(hub, hub_unix_user):
    name = "readonly"
    home = home_of(hub, name)
    home.mkdir(parents=True)
    (home / "ro.fits").write_bytes(FITS)
    subprocess.run(["chown", "-R", hub_unix_user.pw_name, str(home)], check=True)
    home.chmod(0o555)
    hub.start_server(name)
    session = hub.login(name)
    page = open_carta(hub, session, name)
    assert page.status_code == 200 and "<title>CARTA</title>" in page.text
    assert "ro.fits" in asyncio.run(listing(hub, session, name))
    prefs = hub.user_url(name, "api/database/preferences")
    fresh = session.get(prefs)
    assert fresh.status_code == 200 and fresh.json()["preferences"]["telemetryMode"] == "none"
    # saved for this session only (the backend's HOME is a temporary folder), and the page says so
    assert session.put(prefs, json={"colormap": "magma"}).status_code == 200
    assert session.get(prefs).json()["preferences"]["colormap"] == "magma"
    assert "for this session only" in page.text
    assert re.search(rf"Home folder {re.escape(str(home))} is not writable", hub.log())
    assert not (home / ".carta").exists()
