"""carta-standin behaves like carta_backend 5.x where carta-hub relies on it: command line and
log lines, token rule, ICD 30 handshake and file listing, preferences, timeouts."""

import asyncio
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest
import websockets
from carta_standin import icd
from carta_standin.icd import EventType, FileType
from helpers.carta import file_list, register, request
from helpers.standin import FRONTEND, STANDIN, running_standin, start_standin

TOKEN = "test-token"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A top-level folder with a starting folder holding a FITS file, an HDF5 file, a CASA
    image, a region file, a plain file, a hidden file and a subfolder."""
    top = tmp_path_factory.mktemp("top")
    start = top / "data"
    (start / "sub").mkdir(parents=True)
    (start / "sub" / "x").write_text("")
    (start / "cube.fits").write_bytes(b"SIMPLE  =                    T" + b" " * 2850)
    (start / "cube.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    (start / "image.image").mkdir()
    (start / "image.image" / "table.dat").write_bytes(b"\0" * 10)
    (start / "region.crtf").write_text("#CRTF\n")
    (start / "notes.txt").write_text("hello\n")
    (start / ".hidden.fits").write_bytes(b"SIMPLE  =")
    return top


@pytest.fixture(scope="module")
def backend(tmp_path_factory, data):
    """One stand-in shared by the tests that do not end it."""
    home = tmp_path_factory.mktemp("home")
    with running_standin(
        home,
        "--top_level_folder",
        data,
        data / "data",
        "--frontend_folder",
        _frontend(tmp_path_factory),
    ) as backend:
        backend.home = home
        yield backend


def _frontend(tmp_path_factory):
    """The real frontend when installed, else a one-file stand-in for it."""
    if os.path.isfile(os.path.join(FRONTEND, "index.html")):
        return FRONTEND
    folder = tmp_path_factory.mktemp("frontend")
    (folder / "index.html").write_text("<html>CARTA</html>")
    return folder


def http(backend, method, path, body=None, headers=None):
    """``(status, body bytes)`` of one request."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        backend.url(path), data=data, method=method, headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


async def test_register_viewer(backend):
    async with websockets.connect(backend.ws_url(), max_size=None) as ws:
        event_type, version, request_id, ack = await register(ws)
    assert (event_type, version, request_id) == (EventType.REGISTER_VIEWER_ACK, 30, 1)
    assert ack.success and ack.session_id != 0
    assert ack.session_type == icd.SessionType.NEW
    assert ack.platform_strings["platform"] == "Linux"


async def test_wrong_icd_version_is_refused(backend):
    async with websockets.connect(backend.ws_url(), max_size=None) as ws:
        _, _, _, ack = await register(ws, icd_version=29)
    assert not ack.success
    assert ack.message == "Invalid ICD version number. Expected 30, got 29"


async def test_file_list_of_real_folder(backend, data):
    async with websockets.connect(backend.ws_url("/any/path"), max_size=None) as ws:
        await register(ws)
        event_type, _, request_id, listing = await file_list(ws)
        _, _, _, outside = await file_list(ws, "../..", request_id=3)
        _, _, _, missing = await file_list(ws, "nope", request_id=4)
    assert (event_type, request_id) == (EventType.FILE_LIST_RESPONSE, 2)
    assert listing.success and listing.directory == "data" and listing.parent == "."
    files = {f.name: f for f in listing.files}
    assert set(files) == {"cube.fits", "cube.h5", "image.image"}
    assert files["cube.fits"].type == FileType.FITS and list(files["cube.fits"].HDU_list) == ["0"]
    assert files["cube.fits"].size == (data / "data" / "cube.fits").stat().st_size
    assert files["cube.h5"].type == FileType.HDF5
    assert files["image.image"].type == FileType.CASA
    assert [(d.name, d.item_count) for d in listing.subdirectories] == [("sub", 1)]
    assert not outside.success and outside.message == "Forbidden path."
    assert not missing.success and "does not exist" in missing.message


async def test_ping_pong_and_unsupported_events(backend):
    async with websockets.connect(backend.ws_url(), max_size=None) as ws:
        await ws.send("PING")
        assert await asyncio.wait_for(ws.recv(), 5) == "PONG"
        await register(ws)
        event_type, _, _, ack = await request(
            ws,
            EventType.OPEN_FILE,
            icd.messages.OpenFile(directory="data", file="cube.fits", file_id=0),
            5,
        )
        assert event_type == EventType.OPEN_FILE_ACK and not ack.success
        event_type, _, request_id, error = await request(ws, EventType.SET_CURSOR, b"", 6)
        assert (event_type, request_id) == (EventType.ERROR_DATA, 6) and error.message


@pytest.mark.parametrize("how", ["cookie", "bearer", "query", "header"])
def test_token_accepted_four_ways(backend, how):
    path, headers = "/api/database/preferences", {}
    if how == "cookie":
        headers["Cookie"] = f"carta-auth-token={TOKEN}"
    elif how == "bearer":
        headers["Authorization"] = f"Bearer {TOKEN}"
    elif how == "query":
        path += f"?token={TOKEN}"
    else:
        headers["carta-auth-token"] = TOKEN
    headers.setdefault("carta-auth-token", "wrong")  # a wrong one elsewhere does not matter
    assert http(backend, "GET", path, headers=headers)[0] == 200


async def test_missing_or_wrong_token_refused(backend):
    assert http(backend, "GET", "/api/database/preferences")[0] == 403
    assert http(backend, "GET", "/api/database/preferences?token=wrong")[0] == 403
    assert http(backend, "GET", "/config")[0] == 200  # not checked
    for url in (backend.ws_url(token=False), backend.ws_url("/?token=wrong", token=False)):
        with pytest.raises((websockets.exceptions.InvalidHandshake, OSError, EOFError)):
            async with websockets.connect(url, open_timeout=5):
                pass
    assert "Incorrect or missing auth token" in backend.output


def test_config_and_frontend(backend):
    status, body = http(backend, "GET", "/config")
    assert (status, json.loads(body)) == (200, {"apiAddress": "/api"})
    status, body = http(backend, "GET", "/")
    assert status == 200 and b"<html" in body.lower()
    assert http(backend, "GET", "/../../etc/passwd")[0] in (403, 404)
    assert http(backend, "POST", "/api/scripting/action", body={})[0] == 501


def test_preferences_round_trip(backend):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    prefs = {"telemetryMode": "none", "checkNewRelease": False}
    assert http(backend, "PUT", "/api/database/preferences", prefs, auth) == (
        200,
        b'{"success": true}',
    )
    status, body = http(backend, "GET", "/api/database/preferences", headers=auth)
    stored = json.loads(body)["preferences"]
    assert status == 200 and stored["telemetryMode"] == "none" and stored["version"] == 2
    on_disk = json.loads((backend.home / ".carta/config/preferences.json").read_text())
    assert on_disk["checkNewRelease"] is False
    assert (
        http(backend, "DELETE", "/api/database/preferences", {"keys": ["telemetryMode"]}, auth)[0]
        == 200
    )
    status, body = http(backend, "GET", "/api/database/preferences", headers=auth)
    assert "telemetryMode" not in json.loads(body)["preferences"]


def test_layout_objects(backend):
    auth = {"carta-auth-token": TOKEN}
    layout = {"layoutVersion": 2, "docked": {}}
    assert (
        http(
            backend, "PUT", "/api/database/layout", {"layoutName": "mine", "layout": layout}, auth
        )[0]
        == 200
    )
    # like carta_backend (HttpServer.cc: WriteObjectFile), the name is used as given: it
    # writes outside the layouts folder (carta-hub's proxy refuses such names)
    assert (
        http(
            backend, "PUT", "/api/database/layout", {"layoutName": "../x", "layout": layout}, auth
        )[0]
        == 200
    )
    outside = backend.home / ".carta/config/x.json"
    assert json.loads(outside.read_text())["layoutVersion"] == 2
    outside.unlink()
    status, body = http(backend, "GET", "/api/database/layouts", headers=auth)
    assert json.loads(body)["layouts"]["mine"]["layoutVersion"] == 2
    status, body = http(backend, "GET", "/api/database/list/layouts", headers=auth)
    assert [e["name"] for e in json.loads(body)["layouts"]] == ["mine"]
    assert http(backend, "DELETE", "/api/database/layout", {"layoutName": "mine"}, auth)[0] == 200
    assert http(backend, "GET", "/api/database/layout/mine", headers=auth)[0] == 404


def test_busy_port_is_logged_and_not_fatal(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        backend = start_standin(tmp_path / "home", port=port)
        assert backend.wait_exit() == 0  # like carta_backend: not an error exit
    assert f"Could not listen on port {port}!" in backend.output


@pytest.mark.parametrize("verbosity", [1, 3])
def test_quiet_verbosity_hides_the_startup_lines(tmp_path, verbosity):
    """Like carta_backend (src/Logger/Logger.cc, InitLogger): below verbosity 4 neither
    "Listening on port" nor "CARTA is accessible at" (info) is printed; it listens all the same."""
    (tmp_path / "index.html").write_text("<html></html>")
    with running_standin(
        tmp_path / "home", "--verbosity", verbosity, "--frontend_folder", tmp_path, wait=False
    ) as backend:
        deadline = time.monotonic() + 10
        while True:
            try:
                status, _ = http(backend, "GET", f"/api/database/preferences?token={TOKEN}")
                break
            except (ConnectionError, urllib.error.URLError):
                assert time.monotonic() < deadline, backend.output
                time.sleep(0.1)
        assert status == 200
        assert "Listening on port" not in backend.output
        assert "CARTA is accessible at" not in backend.output


def test_missing_starting_folder_falls_back_to_the_working_folder(tmp_path):
    """carta_backend skips a positional path that does not exist (src/Main/ProgramSettings.cc,
    ApplyCommandLineSettings): it starts in its working folder, as for no folder at all."""
    with running_standin(tmp_path / "home", tmp_path / "does-not-exist") as backend:
        line = backend.wait_for_line("Listening on port")
    assert backend.proc.returncode in (None, -9)
    assert f"starting folder {os.path.realpath(os.getcwd())}." in line


def test_symlinked_folders_are_compared_resolved(tmp_path):
    """Like carta_backend (src/Util/Casacore.cc, CheckFolderPaths) the starting folder must
    be inside the top level once symbolic links are resolved, whatever path names them."""
    real = tmp_path / "real"
    (real / "home" / "ann").mkdir(parents=True)
    (tmp_path / "top").symlink_to(real)
    (real / "home" / "out").symlink_to(tmp_path)  # lexically inside, really outside
    with running_standin(
        tmp_path / "h", "--top_level_folder", tmp_path / "top", real / "home" / "ann"
    ) as backend:
        line = backend.wait_for_line("Listening on port")
    assert f"top level folder {real}, starting folder {real}/home/ann." in line
    backend = start_standin(tmp_path / "h", "--top_level_folder", real, real / "home" / "out")
    assert backend.wait_exit() == 1
    assert f"Starting {tmp_path} must be a subdirectory of top level {real}" in backend.output


def test_unwritable_log_file_exits_1(tmp_path):
    """carta_backend cannot open ~/.carta/log/carta.log: spdlog's file sink throws in
    InitLogger (src/Logger/Logger.cc) and main logs it as critical and returns 1 (Main.cc)."""
    home = tmp_path / "home"
    (home / ".carta" / "log" / "carta.log").mkdir(parents=True)  # fails even for root
    result = subprocess.run(
        [STANDIN, "--host", "127.0.0.1", "--port", "0", "--no_browser"],
        env={**os.environ, "HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert (
        f"[critical] Failed opening file {home}/.carta/log/carta.log for writing" in result.stdout
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--top_level_folder", "/does/not/exist"], "Invalid top level directory"),
        (["--no_such_option"], "no_such_option"),
    ],
)
def test_bad_start_exits_1(tmp_path, args, message):
    backend = start_standin(tmp_path / "home", *args)
    assert backend.wait_exit() == 1
    assert message in backend.output


def test_invalid_url_prefix_is_dropped(tmp_path):
    with running_standin(
        tmp_path / "home", "--http_url_prefix", "user/a.b/carta", "--no_frontend"
    ) as backend:
        backend.wait_for_line("Ignoring invalid custom HTTP URL prefix")
        assert http(backend, "GET", f"/api/database/preferences?token={TOKEN}")[0] == 200


def test_url_prefix(tmp_path):
    with running_standin(
        tmp_path / "home", "--http_url_prefix", "user/ann/carta", "--frontend_folder", tmp_path
    ) as backend:
        status, body = http(backend, "GET", "/user/ann/carta/config")
        assert json.loads(body) == {"apiAddress": "/user/ann/carta/api"}
        status, _ = http(backend, "GET", f"/user/ann/carta/api/database/preferences?token={TOKEN}")
        assert status == 200


async def test_idle_timeout_ends_idle_session_then_exit_timeout(tmp_path, data):
    """Like carta_backend, --idle_timeout only drops the idle client (checked on its PING);
    --exit_timeout 0 then ends the process."""
    with running_standin(
        tmp_path / "home",
        "--top_level_folder",
        data,
        data / "data",
        "--idle_timeout",
        1,
        "--exit_timeout",
        0,
    ) as backend:
        async with websockets.connect(backend.ws_url(), max_size=None) as ws:
            await register(ws)
            for i in range(6):  # 2.4 s of activity: every PING is answered
                await file_list(ws, request_id=10 + i)
                await ws.send("PING")
                assert await asyncio.wait_for(ws.recv(), 5) == "PONG"
                await asyncio.sleep(0.4)
            assert backend.proc.poll() is None
            started = time.monotonic()
            with pytest.raises(websockets.exceptions.ConnectionClosed):
                while time.monotonic() - started < 5:  # PINGs only: idle after 1 s
                    await ws.send("PING")
                    await asyncio.wait_for(ws.recv(), 5)
                    await asyncio.sleep(0.3)
        assert backend.wait_exit(5) == 0
        assert time.monotonic() - started < 4
        assert "has been idle for" in backend.output


async def test_exit_timeout_after_last_client(tmp_path):
    with running_standin(tmp_path / "home", "--exit_timeout", 1) as backend:
        async with websockets.connect(backend.ws_url(), max_size=None) as ws:
            await register(ws)
            await asyncio.sleep(1.5)  # connected: no exit
            assert backend.proc.poll() is None
        closed = time.monotonic()
        assert backend.wait_exit(5) == 0
        assert 0.8 < time.monotonic() - closed < 3


def test_initial_timeout(tmp_path):
    started = time.monotonic()
    with running_standin(tmp_path / "home", "--initial_timeout", 1) as backend:
        assert backend.wait_exit(5) == 0
    assert time.monotonic() - started < 5
