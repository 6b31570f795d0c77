"""The JupyterLab mode: carta-hub's `carta` entry in a real Jupyter Server with
jupyter-server-proxy: the launcher tile, and CARTA proxied at <base_url>/carta/."""


import pytest
import websockets

from helpers.jupyter import start_jupyter
from helpers.frames import exchange_both_ways, install_echo_backend


@pytest.fixture(scope="module")
def lab(open_tmp, hub_unix_user):
    server = start_jupyter(open_tmp, "/user/a.student/", user=hub_unix_user.pw_name, args=[
        f"--CartaBackend.executable={install_echo_backend(open_tmp)}"])
    yield server
    server.stop()


def test_launcher_tile_is_carta(lab):
    info = lab.get("server-proxy/servers-info").json()
    carta = next(s for s in info["server_processes"] if s["name"] == "carta")
    assert carta["launcher_entry"]["title"] == "CARTA"
    assert carta["new_browser_tab"] is True
    icon = lab.get("server-proxy/icon/carta")
    assert icon.status_code == 200 and b"<svg" in icon.content


async def test_large_frames_pass_the_tile_both_ways(lab):
    url = lab.url.replace("http://", "ws://") + "carta/"
    headers = {"Authorization": f"token {lab.token}"}
    async with websockets.connect(url, additional_headers=headers, max_size=None) as ws:
        await exchange_both_ways(ws, 64 * 2**20)
