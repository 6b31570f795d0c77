"""Use the echo test backend (echo_backend.py, not CARTA) from tests and benchmarks."""

import os
import shutil
import sys

ECHO = os.path.join(os.path.dirname(__file__), "echo_backend.py")


def install_echo_backend(directory):
    """An executable ``echo_backend`` in ``directory`` (readable by the Hub's user)."""
    script = os.path.join(directory, "echo_backend")
    shutil.copy(ECHO, script + ".py")
    with open(script, "w") as f:
        f.write(f'#!/bin/sh\nexec {sys.executable} {script}.py "$@"\n')
    os.chmod(script, 0o755)
    os.chmod(script + ".py", 0o644)
    return script


async def exchange_both_ways(ws, size):
    """Send a ``size``-byte frame to the echo backend and have it send one back."""
    await ws.send(os.urandom(size))
    await ws.send("stats")
    assert await ws.recv() == str(size)
    await ws.send(f"send {size} 1")
    frame = await ws.recv()
    assert isinstance(frame, bytes) and len(frame) == size
    assert await ws.recv() == "sent"
