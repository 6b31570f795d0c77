"""What a student sees when CARTA cannot start: a clear page naming the setting to fix,
and the Hub keeps running."""

import os
import subprocess

from helpers.client import open_carta
from helpers.hub import SAME_USER_CARTA, VENV_BIN
from helpers.ports import free_port


def test_missing_backend_names_the_setting(hub_factory):
    hub = hub_factory(
        SAME_USER_CARTA
        + """
c.CartaBackend.executable = "/nonexistent/carta_backend"
"""
    )
    hub.start_server("alice")
    page = open_carta(hub, hub.login("alice"), "alice")
    assert page.status_code == 503
    assert "c.CartaBackend.executable" in page.text
    assert "/nonexistent/carta_backend" in page.text
    assert hub.api("GET", "/").status_code == 200


def test_missing_frontend_names_the_folder_and_setting(hub_factory, open_tmp):
    """carta_backend with a frontend folder lacking index.html answers 404 to every page: the
    student gets a page naming the folder and the setting instead."""
    empty = open_tmp / "frontend"  # readable by the server's user, without index.html
    empty.mkdir()
    hub = hub_factory(
        SAME_USER_CARTA
        + f"""
c.CartaBackend.frontend_folder = "{empty}"
"""
    )
    hub.start_server("alice")
    page = open_carta(hub, hub.login("alice"), "alice")
    assert page.status_code == 503
    assert f"{empty} holds no readable index.html" in page.text
    assert "c.CartaBackend.frontend_folder" in page.text
    assert hub.api("GET", "/").status_code == 200


def test_unreachable_hub_api_stops_a_port_reporting_server(tmp_path):
    """On Slurm the server tells the Hub its port; if the Hub's API cannot be reached from
    the node, the job's log says so and the server stops (the spawn fails with that tail)."""
    env = {
        **os.environ,
        "JUPYTERHUB_API_URL": f"http://127.0.0.1:{free_port()}/hub/api",
        "JUPYTERHUB_API_TOKEN": "t",
        "JUPYTERHUB_USER": "alice",
        "HOME": str(tmp_path),
        "JUPYTERHUB_SERVICE_PREFIX": "/user/alice/",
    }
    result = subprocess.run(
        [
            str(VENV_BIN / "carta-hub-singleuser"),
            "--CartaSingleUserApp.report_port=True",
            "--ip=127.0.0.1",
            f"--CartaBackend.executable={VENV_BIN / 'carta-standin'}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert "Could not tell the Hub this server's port (POST http://127.0.0.1:" in result.stderr
    assert "c.JupyterHub.hub_bind_url" in result.stderr
