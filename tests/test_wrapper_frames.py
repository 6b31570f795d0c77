"""Frames of any size pass the CARTA-only wrapper both ways (jupyter-server-proxy caps them
at 10 MiB; CARTA allows 256 MB). The backend here is a websocket test server with
carta_backend's command line (tests/helpers/echo_backend.py), not CARTA."""

import pytest

from helpers.client import connect, open_carta
from helpers.frames import exchange_both_ways, install_echo_backend
from helpers.hub import SAME_USER_CARTA


@pytest.fixture(scope="module")
def echo_hub(hub_factory, open_tmp):
    return hub_factory(SAME_USER_CARTA + f"""
c.CartaBackend.executable = "{install_echo_backend(open_tmp)}"
""")


async def test_64mb_frames_pass_both_ways(echo_hub):
    hub = echo_hub
    hub.start_server("alice")
    session = hub.login("alice")
    open_carta(hub, session, "alice")
    async with connect(hub, session, "alice") as ws:
        await exchange_both_ways(ws, 64 * 2**20)
