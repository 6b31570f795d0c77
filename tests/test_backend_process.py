"""The wrapper's supervision of one backend (carta_hub.server.backend_process.BackendProcess) with the stand-in
``carta-standin`` (NOT CARTA): when it counts as started, busy ports, what it logs."""

import asyncio
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from helpers.standin import STANDIN

from carta_hub.backend import CartaBackend
from carta_hub.server import backend_process as process
from carta_hub.server.backend_process import BackendProcess


@pytest.fixture
def frontend(tmp_path):
    folder = tmp_path / "frontend"
    folder.mkdir()
    (folder / "index.html").write_text("<html>CARTA</html>")
    return folder


@pytest.fixture
def home(tmp_path, monkeypatch):
    folder = tmp_path / "home"
    folder.mkdir()
    monkeypatch.setenv("HOME", str(folder))
    return folder


def backend_process(frontend, **settings):
    settings = {
        "executable": STANDIN,
        "frontend_folder": str(frontend),
        "start_timeout": 30,
        **settings,
    }
    return BackendProcess(CartaBackend(**settings), logging.getLogger("test-backend"))


@pytest.mark.parametrize("verbosity", [1, 3])
async def test_quiet_backend_starts_without_its_listening_line(home, frontend, verbosity):
    """Below verbosity 4 carta_backend never logs "Listening on port": the wrapper must see
    the backend listening by itself, quickly, not wait out start_timeout."""
    backend = backend_process(frontend, verbosity=verbosity)
    started = time.monotonic()
    try:
        port, token = await backend.ensure_running()
        assert time.monotonic() - started < 10
        assert not any("Listening on port" in line for line in backend.tail)
        assert await preferences_status(port, token) == 200
    finally:
        await backend.stop()


async def preferences_status(port, token):
    """The backend's answer to an authorised request (it is CARTA's, not another listener's)."""
    r = await asyncio.to_thread(
        requests.get,
        f"http://127.0.0.1:{port}/api/database/preferences",
        headers={"carta-auth-token": token},
        timeout=5,
    )
    return r.status_code


def hold_port(user=None):
    """A process (of ``user``, default: this one's) listening on a free 127.0.0.1 port:
    ``(process, port)``."""
    code = (
        "import socket, sys; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen();"
        "print(s.getsockname()[1], flush=True); sys.stdin.read()"
    )
    prefix = (
        ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", "--"] if user else []
    )
    holder = subprocess.Popen(
        [*prefix, sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    return holder, int(holder.stdout.readline())


@pytest.mark.parametrize("verbosity", [1, 4])
@pytest.mark.parametrize("user", [None, 65534])
async def test_busy_port_is_not_mistaken_for_the_backend(
    home, frontend, monkeypatch, verbosity, user
):
    """The first port the wrapper picks is taken (by this user, or by another user who
    could answer the student's requests) before the backend binds it: the backend gives up
    on it (logging why only at verbosity >= 2) and the wrapper starts it on another port,
    never taking the holder's listener for CARTA."""
    holder, taken = hold_port(user)
    ports = iter([taken])
    monkeypatch.setattr(process, "free_port", lambda: next(ports, None) or _free())
    backend = backend_process(frontend, verbosity=verbosity)
    try:
        port, token = await backend.ensure_running()
        assert port != taken
        assert await preferences_status(port, token) == 200
    finally:
        await backend.stop()
        holder.kill()
        holder.wait()


def _free():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_backend_that_exits_is_reported_with_its_output(home, frontend, tmp_path):
    backend = backend_process(frontend, top_level_folder=str(tmp_path / "missing"))
    with pytest.raises(process.BackendFailed) as failed:
        await backend.ensure_running()
    assert "exited with code 1" in str(failed.value)
    assert "Invalid top level directory" in str(failed.value)
    assert not os.path.exists(tmp_path / "missing")


async def test_token_is_not_logged(home, frontend, caplog):
    """carta_backend prints ``CARTA is accessible at http://...:PORT/?token=TOKEN`` at
    verbosity 4 (src/Main/Main.cc, main): the wrapper copies the backend's output into its
    log (a file others may read on a shared node) and into error pages, without the token."""
    backend = backend_process(frontend, verbosity=5)
    caplog.set_level(logging.DEBUG, logger="test-backend")
    try:
        port, token = await backend.ensure_running()
        assert await preferences_status(port, token) == 200
        await asyncio.to_thread(requests.get, f"http://127.0.0.1:{port}/?token={token}", timeout=5)
        accessible = [line for line in backend.tail if "CARTA is accessible at" in line]
        assert accessible and accessible[0].endswith(f":{port}/?token=<redacted>")
        assert token not in "\n".join(backend.tail)
        assert "CARTA is accessible at" in caplog.text and token not in caplog.text
        cmdline = await asyncio.to_thread(Path(f"/proc/{backend.proc.pid}/cmdline").read_bytes)
        assert token.encode() not in cmdline
    finally:
        await backend.stop()


@pytest.mark.parametrize("verbosity", [2, 4])
async def test_missing_frontend_is_fatal_and_names_the_setting(home, tmp_path, verbosity):
    """A frontend folder without index.html: carta_backend still starts and answers 404 to
    every page (logging why only at verbosity >= 3); the wrapper refuses it, naming the
    folder and the setting, and leaves no backend running."""
    empty = tmp_path / "no-frontend"
    empty.mkdir()
    backend = backend_process(empty, verbosity=verbosity)
    with pytest.raises(process.FrontendNotFound) as missing:
        await backend.ensure_running()
    assert f"{empty} holds no readable index.html" in str(missing.value)
    assert "c.CartaBackend.frontend_folder" in str(missing.value)
    assert not backend.running


async def test_missing_default_frontend_names_the_backends_folder(home):
    """Without c.CartaBackend.frontend_folder the backend looks beside its executable
    (<exe>/../share/carta/frontend, src/Main/Main.cc); it names that folder."""
    backend = BackendProcess(CartaBackend(executable=STANDIN), logging.getLogger("test"))
    with pytest.raises(process.FrontendNotFound) as missing:
        await backend.ensure_running()
    default = os.path.join(os.path.dirname(os.path.realpath(STANDIN)), "../share/carta/frontend")
    assert f"{default} holds no readable index.html" in str(missing.value)


def test_home_under_a_symlinked_top_level_is_the_starting_folder(tmp_path, monkeypatch):
    """carta_backend compares resolved paths (src/Util/Casacore.cc, CheckFolderPaths): a home
    reached through a symlink into the top level starts there; a home whose path lies under
    the top level but leads out of it would make the backend exit, so the top level is used."""
    real = tmp_path / "ceph"
    (real / "home" / "ann").mkdir(parents=True)
    (tmp_path / "data").symlink_to(real)
    (real / "home" / "bob").symlink_to(tmp_path)  # lexically inside, really outside
    cases = [
        (real / "home" / "ann", tmp_path / "data", real / "home" / "ann"),
        (tmp_path / "data" / "home" / "ann", real, tmp_path / "data" / "home" / "ann"),
        (real / "home" / "bob", real, real),
    ]
    for home, top, expected in cases:
        monkeypatch.setenv("HOME", str(home))
        backend = CartaBackend(top_level_folder=str(top))
        assert backend.start_in() == str(expected), (home, top)


async def test_unwritable_log_file_fails_the_start(home, frontend):
    """With c.CartaBackend.write_log_file, a ~/.carta/log/carta.log the backend cannot open
    makes carta_backend exit 1 (src/Logger/Logger.cc, InitLogger): the wrapper says why."""
    (home / ".carta" / "log" / "carta.log").mkdir(parents=True)
    backend = backend_process(frontend, write_log_file=True)
    with pytest.raises(process.BackendFailed) as failed:
        await backend.ensure_running()
    assert "exited with code 1" in str(failed.value)
    assert f"Failed opening file {home}/.carta/log/carta.log for writing" in str(failed.value)


# A wrapper with threads (as a Jupyter Server has): four end a second after the backend
# started, the loop's thread lives on. Prints the backend's PID, then waits to be killed.
THREADED_WRAPPER = """
import asyncio, sys, threading, time
from carta_hub.backend import CartaBackend
from carta_hub.server.backend_process import BackendProcess

async def main():
    threads = [threading.Thread(target=time.sleep, args=(1,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    backend = BackendProcess(CartaBackend(executable=sys.argv[1], frontend_folder=sys.argv[2],
                                          start_timeout=30))
    await backend.ensure_running()
    print(backend.proc.pid, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def test_backend_ends_with_a_killed_wrapper(home, frontend):
    """No orphaned CARTA: SIGKILL of a wrapper with threads ends its backend; threads other
    than the one that started it may end before."""
    wrapper = subprocess.Popen(
        [sys.executable, "-c", THREADED_WRAPPER, STANDIN, str(frontend)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        backend = int(wrapper.stdout.readline())
        time.sleep(2)  # the other threads have ended
        assert not process._exited(backend), "the backend ended with a thread of the wrapper"
        wrapper.kill()
        wrapper.wait()
        deadline = time.monotonic() + 10
        while not process._exited(backend) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process._exited(backend), "the backend outlived its killed wrapper"
    finally:
        wrapper.kill()
        wrapper.wait()


async def test_backend_starts_without_python_in_the_child(home, frontend, monkeypatch):
    """The backend is started without a preexec_fn (Python code between fork and exec is not
    safe in a server with threads): setpriv --pdeathsig execs it."""
    calls = []
    create = asyncio.create_subprocess_exec

    async def recording(*args, **kwargs):
        calls.append((args, kwargs))
        return await create(*args, **kwargs)

    monkeypatch.setattr(asyncio, "create_subprocess_exec", recording)
    backend = backend_process(frontend)
    try:
        await backend.ensure_running()
    finally:
        await backend.stop()
    args, kwargs = calls[-1]
    assert "preexec_fn" not in kwargs
    assert Path(args[0]).name == "setpriv" and args[1:4] == ("--pdeathsig", "TERM", "--")
    assert args[4] == STANDIN


@pytest.mark.parametrize("setpriv", [None, "old"])
async def test_missing_or_old_setpriv_is_named(home, frontend, tmp_path, monkeypatch, setpriv):
    """Without setpriv --pdeathsig (util-linux < 2.33, e.g. RHEL 8) CARTA is not started
    unguarded: the error says what to install."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if setpriv == "old":  # what util-linux 2.32's setpriv answers
        (bin_dir / "setpriv").write_text(
            "#!/bin/sh\necho \"setpriv: unrecognized option '--pdeathsig'\" >&2\nexit 1\n"
        )
        (bin_dir / "setpriv").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    backend = backend_process(frontend)
    with pytest.raises(process.BackendNotFound) as refused:
        await backend.ensure_running()
    message = str(refused.value)
    assert "util-linux 2.33 or later" in message and "install util-linux" in message
    expected = "unrecognized option '--pdeathsig'" if setpriv else "setpriv is not on PATH"
    assert expected in message
    assert backend.proc is None
