"""JupyterLab mode in a real browser (Chromium): the student logs in, JupyterLab opens with a
CARTA tile in its launcher, and the tile opens the real carta-frontend 6.0.0 in a new tab,
connected, with the student's files. Real Hub + configurable-http-proxy +
jupyterhub-singleuser with carta-hub installed; the backend is carta-standin, a stand-in for
carta_backend (NOT CARTA: it lists folders, it cannot open images)."""

import subprocess

import pytest
from helpers.browser import Student, browser  # noqa: F401  (fixture)
from helpers.hub import SAME_USER_CARTA

FITS = b"SIMPLE  =                    T" + b" " * 2850
NAME = "lab.student"


@pytest.fixture(scope="module")
def hub(hub_factory, hub_unix_user):
    hub = hub_factory(
        SAME_USER_CARTA
        + """
c.SameUserCartaSpawner.carta_mode = "lab"
c.CartaBackend.offline = True
c.CartaBackend.top_level_folder = "{home}"
"""
    )
    home = hub.workdir / "homes" / NAME
    home.mkdir(parents=True)
    (home / "ngc1333-cube.fits").write_bytes(FITS)
    subprocess.run(["chown", "-R", hub_unix_user.pw_name, str(home)], check=True)
    return hub


def test_launcher_tile_opens_carta_in_a_new_tab(browser, hub, artifacts):  # noqa: F811
    with Student(browser, artifacts, "lab-launcher", timeout=90) as student:
        student.login(hub.url, NAME, hub.password)
        lab = student.page
        lab.wait_for_url(hub.user_url(NAME, "lab") + "**")
        # jupyter-server-proxy marks tiles that open a new browser tab with [↗]
        tile = lab.locator('.jp-LauncherCard[title="CARTA [↗]"]')
        tile.wait_for()
        assert tile.inner_text().strip() == "CARTA [↗]"
        assert tile.locator("img").get_attribute("src") == f"/user/{NAME}/server-proxy/icon/carta"
        student.screenshot()

        with student.context.expect_page() as opened:
            tile.click()
        carta = opened.value
        carta.wait_for_url(hub.user_url(NAME, "carta/") + "**")
        student.wait_connected(carta)
        assert "ngc1333-cube.fits" in student.files("ngc1333-cube.fits", page=carta)
        assert student.folder(carta) == []  # the top level: the student's home
        student.assert_healthy(carta)
        student.screenshot("lab-carta-tab", page=carta)
        assert len(student.context.pages) == 2  # JupyterLab stays open in its own tab
        assert student.sent_outside() == []  # c.CartaBackend.offline covers the tile too
