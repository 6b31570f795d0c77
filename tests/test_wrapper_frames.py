"""Frames of any size pass the CARTA-only wrapper both ways (jupyter-server-proxy caps them
at 10 MiB; CARTA allows 256 MB). The backend here is a websocket test server with
carta_backend's command line (tests/helpers/echo_backend.py), not CARTA."""

import asyncio
import os

import pytest
from helpers.client import connect, open_carta
from helpers.frames import exchange_both_ways, install_echo_backend
from helpers.hub import SAME_USER_CARTA
from helpers.ports import wait_for


@pytest.fixture(scope="module")
def echo_hub(hub_factory, open_tmp):
    return hub_factory(
        SAME_USER_CARTA
        + f"""
c.CartaBackend.executable = "{install_echo_backend(open_tmp)}"
c.Spawner.args = ["--CartaSingleUserApp.activity_interval=1"]
"""
    )


async def test_64mb_frames_pass_both_ways(echo_hub):
    hub = echo_hub
    hub.start_server("alice")
    session = hub.login("alice")
    open_carta(hub, session, "alice")
    async with connect(hub, session, "alice") as ws:
        await exchange_both_ways(ws, 64 * 2**20)


async def test_heartbeats_after_large_frames_are_still_not_use(echo_hub):
    """The wrapper passes large frames' payloads on unread; what follows them is still told
    apart: the frontend's PINGs are not use (the culler may end the session), frames are."""
    hub, name = echo_hub, "bob"
    hub.start_server(name)
    session = hub.login(name)
    open_carta(hub, session, name)
    async with connect(hub, session, name) as ws:
        sizes = [5000, 3 * 2**20 + 7]
        for size in sizes:
            await ws.send(os.urandom(size))
        await ws.send("stats")
        assert await ws.recv() == str(sum(sizes))
        await asyncio.sleep(2.5)  # reported within one 1-s interval
        before = hub.server(name)["last_activity"]
        for _ in range(4):
            await ws.send("PING")
            await asyncio.sleep(1)
        assert hub.server(name)["last_activity"] == before
        await ws.send(b"cursor")
        assert await ws.recv() == b"cursor"
        await asyncio.to_thread(
            wait_for,
            lambda: hub.server(name)["last_activity"] != before,
            10,
            "the frame's activity to reach the Hub",
        )
