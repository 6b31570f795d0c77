"""Frames of any size pass the CARTA wrapper both ways (jupyter-server-proxy caps them at
10 MiB; CARTA allows 256 MB). The backend here is a websocket echo test server with
carta_backend's command line (tests/helpers/echo_backend.py), not CARTA."""

import os
import shutil
import sys

import pytest

from helpers.client import connect, open_carta
from helpers.hub import SAME_USER_CARTA

ECHO = os.path.join(os.path.dirname(__file__), "helpers", "echo_backend.py")


def install_echo_backend(directory):
    """An executable ``echo_backend`` in ``directory`` (readable by the Hub's user)."""
    script = os.path.join(directory, "echo_backend")
    shutil.copy(ECHO, script + ".py")
    with open(script, "w") as f:
        f.write(f'#!/bin/sh\nexec {sys.executable} {script}.py "$@"\n')
    os.chmod(script, 0o755)
    os.chmod(script + ".py", 0o644)
    return script


@pytest.fixture
def echo_hub(hub_factory, open_tmp):
    return hub_factory(SAME_USER_CARTA + f"""
c.CartaBackend.executable = "{install_echo_backend(open_tmp)}"
""")


@pytest.mark.parametrize("size", [64 * 2**20])
async def test_large_frames_pass_both_ways(echo_hub, size):
    hub = echo_hub
    hub.start_server("alice")
    session = hub.login("alice")
    open_carta(hub, session, "alice")
    payload = os.urandom(1024) * (size // 1024)
    async with connect(hub, session, "alice") as ws:
        await ws.send(payload)
        echoed = await ws.recv()
    assert len(echoed) == size and echoed == payload
