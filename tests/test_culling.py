"""Idle culling end to end with jupyterhub_config/culling.py and short timeouts: a real Hub +
CHP + jupyterhub-idle-culler, CARTA-only servers running the stand-in backend, browser-like
websocket clients through the proxy. The Hub polls the proxy every second, so an open tab's
PINGs count as Hub activity as they would in production."""

import asyncio
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import websockets
from carta_standin import icd
from carta_standin.icd import EventType
from helpers.client import connect, open_carta
from helpers.hub import SAME_USER_CARTA

CONFIG = Path(__file__).parent.parent / "jupyterhub_config" / "culling.py"
IDLE, CULL_EVERY, EXIT = 6, 4, 2
BOUND = IDLE + CULL_EVERY + 2  # + the server process stopping and the test polling
ENV = {
    "CARTA_IDLE_TIMEOUT": str(IDLE),
    "CARTA_CULL_EVERY": str(CULL_EVERY),
    "CARTA_EXIT_TIMEOUT": str(EXIT),
}
SNIPPET = (
    SAME_USER_CARTA
    + f"""
load_subconfig("{CONFIG}")
c.Spawner.poll_interval = 1
c.Spawner.args = ["--CartaSingleUserApp.activity_interval=1"]
c.JupyterHub.last_activity_interval = 1
"""
)


@pytest.fixture(scope="module")
def hub(hub_factory):
    return hub_factory(SNIPPET, env=ENV)


def frame(event_type, request_id, message):
    return icd.encode_message(event_type, request_id, message)


async def reply(ws, wanted):
    while True:
        message = await ws.recv()
        if isinstance(message, bytes) and icd.decode_header(message)[0] == wanted:
            return icd.decode_message(message)[3]


async def open_tab(hub, name):
    """A started server, a logged-in browser session and a registered CARTA websocket."""
    await asyncio.to_thread(hub.start_server, name)
    session = await asyncio.to_thread(hub.login, name)
    await asyncio.to_thread(open_carta, hub, session, name)
    ws = await connect(hub, session, name)
    await ws.send(
        frame(EventType.REGISTER_VIEWER, 1, icd.messages.RegisterViewer(client_feature_flags=5))
    )
    assert (await reply(ws, EventType.REGISTER_VIEWER_ACK)).success
    return ws


async def gone_within(hub, name, since, bound):
    """Seconds from ``since`` until ``name``'s server is gone; fails after ``bound``."""
    while time.monotonic() - since <= bound:
        if not await asyncio.to_thread(hub.server, name):
            return time.monotonic() - since
        await asyncio.sleep(0.25)
    pytest.fail(f"{name}'s server still runs {bound} s after the last interaction")


async def interacting(hub, duration):
    """FILE_LIST_REQUEST every second (and PINGs) for ``duration`` s: never culled."""
    ws = await open_tab(hub, "active")
    for request_id in range(2, duration + 2):
        await ws.send("PING")
        await ws.send(
            frame(
                EventType.FILE_LIST_REQUEST,
                request_id,
                icd.messages.FileListRequest(directory="$BASE"),
            )
        )
        assert (await reply(ws, EventType.FILE_LIST_RESPONSE)).success
        await asyncio.sleep(1)
    assert (await asyncio.to_thread(hub.server, "active")).get("ready")
    await ws.close()


async def pings_only(hub):
    """An open but unused tab: the Hub sees its PINGs as activity (through the proxy), yet
    CARTA disconnects it and exits, and the server stops."""
    ws = await open_tab(hub, "pinger")
    last_interaction, registered = time.monotonic(), datetime.now(timezone.utc)
    hub_activity = []
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            await ws.send("PING")
            hub_activity.append((await asyncio.to_thread(hub.server, "pinger"))["last_activity"])
            await asyncio.sleep(1)
    assert datetime.fromisoformat(max(hub_activity)) > registered + timedelta(seconds=3)
    return await gone_within(hub, "pinger", last_interaction, BOUND)


async def closed_tab(hub):
    ws = await open_tab(hub, "closer")
    await ws.close()
    return await gone_within(hub, "closer", time.monotonic(), BOUND)


async def never_opened(hub):
    """Started, never used: the culler (not CARTA) stops it."""
    await asyncio.to_thread(hub.start_server, "absent")
    started = time.monotonic()
    return await gone_within(hub, "absent", started, BOUND)


async def test_idle_sessions_end_and_active_ones_stay(hub):
    results = await asyncio.gather(
        interacting(hub, BOUND + 2), pings_only(hub), closed_tab(hub), never_opened(hub)
    )
    pinger, closer, absent = results[1:]
    print(f"seconds until stopped: pinger {pinger:.1f}, closer {closer:.1f}, absent {absent:.1f}")
    log = hub.log()
    assert "Culling server absent " in log
    assert "Culling server active " not in log
    assert "Culling server pinger " not in log  # CARTA ended it, not the culler
    assert "has been idle for" in log


def test_logout_stops_the_server(hub):
    hub.start_server("leaver")
    session = hub.login("leaver")
    session.get(f"{hub.url}/hub/logout")
    assert not hub.server("leaver")
