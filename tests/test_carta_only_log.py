"""What a CARTA-only server (under a real Hub, with the stand-in backend ``carta-standin``,
NOT CARTA) writes to its log: the backend's output, without the backend's token."""

from pathlib import Path

from helpers.client import open_carta
from helpers.hub import SAME_USER_CARTA
from helpers.procs import every_process, runs


def backend_token(home):
    """``(pid, CARTA_AUTH_TOKEN)`` of the running carta-standin whose HOME is ``home``."""
    for pid, argv, env, _ in every_process():
        if env.get(b"HOME") == str(home).encode() and runs(argv, "carta-standin"):
            return pid, env[b"CARTA_AUTH_TOKEN"].decode()
    raise AssertionError(f"no carta-standin with HOME={home}")


def test_backend_token_is_in_no_log(hub_factory):
    """The backend prints ``CARTA is accessible at http://127.0.0.1:PORT/?token=...`` at
    verbosity 4, like carta_backend (src/Main/Main.cc, main); the server's log (on Slurm a
    file on the node) keeps the line but not the token, nor is it on a command line."""
    hub = hub_factory(SAME_USER_CARTA)
    hub.start_server("alice")
    assert open_carta(hub, hub.login("alice"), "alice").status_code == 200
    pid, token = backend_token(hub.workdir / "homes" / "alice")
    log = hub.log()
    assert "CARTA is accessible at http://127.0.0.1:" in log
    assert "/?token=<redacted>" in log
    assert token not in log
    assert token.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
