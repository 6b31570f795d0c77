"""Free loopback ports and polling waits for tests."""

import socket
import time


def free_port():
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check, timeout, what, interval=0.1):
    """Call ``check()`` until it returns a true value (returned) or ``timeout`` s pass."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def await_server(server, check, timeout, what):
    """Wait until ``check()`` is true; on failure stop ``server`` (its ``.stop()``, which
    ends the processes it started) and re-raise. Returns ``server``."""
    try:
        wait_for(check, timeout, what)
    except Exception:
        server.stop()
        raise
    return server
