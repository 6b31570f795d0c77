"""Open in CARTA (issue 20): JupyterLab's file browser opens an image or a folder in CARTA,
and a course page's link opens one image for every student through login and spawn.

Real Chromium, the real carta-frontend 6.0.0, JupyterLab with carta-hub's labextension, a
real Hub + configurable-http-proxy; the backend is carta-standin (NOT CARTA: it cannot open
images, but it logs each OPEN_FILE the frontend sends, which is what these tests check)."""

import re
import subprocess
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from helpers.browser import Student, browser  # noqa: F401  (fixture)
from helpers.hub import SAME_USER_CARTA
from playwright.sync_api import TimeoutError as PlaywrightTimeout

FITS = b"SIMPLE  =                    T" + b" " * 2850
LAB_USER = "lab.student"
OTHER = "other.student"
CARTA_USER = "ada.lovelace"  # a dot: the name is escaped in the server's URL and home
CUBE = "ngc1333 cube.fits"  # a space: encoded in the link, decoded by the frontend
MENU_ITEM = '.lm-Menu-item[data-command="{}"]:visible'
OPEN, OPEN_FOLDER = "carta-hub:open", "carta-hub:open-folder"
# the tests' service may also make tokens for the students
TOKENS = '\nc.JupyterHub.load_roles[0]["scopes"].append("tokens")\n'


def make_home(hub, hub_unix_user, name):
    """The student's home: data/ (CARTA's top-level folder) holding obs/ with a FITS cube, a
    CASA image folder and a plain folder; a FITS file beside data/, outside the top level."""
    home = hub.workdir / "homes" / name
    obs = home / "data" / "obs"
    (obs / "m51.image").mkdir(parents=True)
    (obs / "m51.image" / "table.dat").write_bytes(b"\xbe\xbe\xbe\xbe")
    (obs / "m51.image" / "table.info").write_text("Type = Image\nSubType = \n")
    (obs / "calibration").mkdir()
    (obs / CUBE).write_bytes(FITS)
    (home / "outside.fits").write_bytes(FITS)
    subprocess.run(["chown", "-R", hub_unix_user.pw_name, str(home)], check=True)
    return home


def opened_files(hub, since=0):
    """``(directory, file)`` of every OPEN_FILE the stand-ins logged after ``since`` chars of
    the Hub's log (the servers' output goes there)."""
    found = re.findall(r"OPEN_FILE directory='([^']*)' file='([^']*)'", hub.log()[since:])
    return found


def wait_opened(hub, since, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := opened_files(hub, since):
            return found
        time.sleep(0.2)
    raise TimeoutError(f"no OPEN_FILE in the Hub's log:\n{hub.log()[since:][-3000:]}")


def user_token(hub, name):
    r = hub.api("POST", f"/users/{name}/tokens", json={"note": "test"})
    assert r.status_code == 201, r.text
    return r.json()["token"]


def link(hub, owner, path, token):
    return requests.get(
        hub.user_url(owner, "carta-hub/link"),
        params={"path": path},
        headers={"Authorization": f"token {token}"},
        timeout=30,
    )


@pytest.fixture(scope="module")
def lab_hub(hub_factory, hub_unix_user):
    hub = hub_factory(
        SAME_USER_CARTA
        + """
c.SameUserCartaSpawner.carta_mode = "lab"
c.CartaBackend.top_level_folder = "{home}/data"
"""
        + TOKENS
    )
    make_home(hub, hub_unix_user, LAB_USER)
    make_home(hub, hub_unix_user, OTHER)
    return hub


@pytest.fixture(scope="module")
def carta_hub(hub_factory, hub_unix_user):
    hub = hub_factory(
        SAME_USER_CARTA
        + """
c.CartaBackend.top_level_folder = "{home}/data"
# every spawn shows the progress page, as a Slurm or Kubernetes spawn does
c.JupyterHub.tornado_settings = {"slow_spawn_timeout": 0}
"""
        + TOKENS
    )
    make_home(hub, hub_unix_user, CARTA_USER)
    return hub


def lab_folder(student, hub, folder):
    """JupyterLab with its file browser in ``folder`` (relative to the Jupyter root; "" for
    the root), without JupyterLab's question about news (it would be in the screenshots)."""
    lab = student.page
    lab.goto(hub.user_url(LAB_USER, f"lab/tree/{folder}" if folder else "lab"))
    lab.locator(".jp-DirListing-item").first.wait_for()  # the folder it restored
    if not folder:
        lab.locator(".jp-BreadCrumbs-home").click()
    news = lab.locator(".jp-toast-button", has_text="No")
    try:  # asked once per student (the answer is saved)
        news.click(timeout=3000)
    except PlaywrightTimeout:
        pass


def right_click(page, name):
    page.locator(f'.jp-DirListing-item[title^="Name: {name}"]').click(button="right")


def test_open_a_fits_file_from_the_file_browser(browser, lab_hub, artifacts):  # noqa: F811
    with Student(browser, artifacts, "open-in-carta", timeout=90) as student:
        student.login(lab_hub.url, LAB_USER, lab_hub.password)
        lab = student.page
        lab.wait_for_url(lab_hub.user_url(LAB_USER, "lab") + "**")
        lab_folder(student, lab_hub, "data/obs")
        right_click(lab, CUBE)
        item = lab.locator(MENU_ITEM.format(OPEN))
        item.wait_for()
        assert lab.locator(MENU_ITEM.format(OPEN_FOLDER)).count() == 0  # a file, not a folder
        student.screenshot("student-open-in-carta-menu")
        since = len(lab_hub.log())
        with student.context.expect_page() as opened:
            item.click()
        carta = opened.value
        carta.wait_for_url(lab_hub.user_url(LAB_USER, "carta/") + "**")
        query = parse_qs(urlsplit(carta.url).query)
        assert query == {"folder": ["obs"], "file": [CUBE]}  # relative to the top level, no token
        student.wait_connected(carta)
        # the frontend asked the backend for exactly that image
        assert wait_opened(lab_hub, since) == [("obs", CUBE)]
        carta.get_by_text("Error loading file").wait_for()  # the stand-in's answer came
        student.screenshot("student-open-in-carta-tab", page=carta)


def test_casa_image_folder_and_plain_folder(browser, lab_hub, artifacts):  # noqa: F811
    with Student(browser, artifacts, "open-in-carta-folders", timeout=90) as student:
        student.login(lab_hub.url, LAB_USER, lab_hub.password)
        lab = student.page
        lab_folder(student, lab_hub, "data/obs")
        # the server looked inside: a CASA image opens as an image
        right_click(lab, "m51.image")
        lab.locator(MENU_ITEM.format(OPEN)).wait_for()
        assert lab.locator(MENU_ITEM.format(OPEN_FOLDER)).count() == 0
        since = len(lab_hub.log())
        with student.context.expect_page() as opened:
            lab.locator(MENU_ITEM.format(OPEN)).click()
        student.wait_connected(opened.value)
        assert wait_opened(lab_hub, since) == [("obs", "m51.image")]
        opened.value.close()

        # a plain folder: CARTA's File Browser in it
        right_click(lab, "calibration")
        item = lab.locator(MENU_ITEM.format(OPEN_FOLDER))
        item.wait_for()
        assert lab.locator(MENU_ITEM.format(OPEN)).count() == 0
        console = len(student.console)
        with student.context.expect_page() as opened:
            item.click()
        carta = opened.value
        student.wait_connected(carta, since=console)
        assert student.folder(carta) == ["obs", "calibration"]


def test_a_file_outside_the_top_level_folder_gets_a_message(browser, lab_hub, artifacts):  # noqa: F811
    with Student(browser, artifacts, "open-in-carta-outside", timeout=90) as student:
        student.login(lab_hub.url, LAB_USER, lab_hub.password)
        lab = student.page
        lab_folder(student, lab_hub, "")
        right_click(lab, "outside.fits")
        lab.locator(MENU_ITEM.format(OPEN)).click()
        dialog = lab.locator(".jp-Dialog")
        dialog.wait_for()
        text = dialog.inner_text()
        assert "Cannot open in CARTA" in text
        assert "/outside.fits is outside CARTA's top-level folder" in text
        assert "Copy or move it into that folder" in text
        assert "c.CartaBackend" not in text  # a student's message, not an operator's
        student.screenshot("student-open-in-carta-outside")
        assert len(student.context.pages) == 1  # no broken tab left behind


def test_open_in_a_jupyterlab_tab(browser, lab_hub, artifacts):  # noqa: F811
    with Student(browser, artifacts, "open-in-carta-lab-tab", timeout=90) as student:
        student.login(lab_hub.url, LAB_USER, lab_hub.password)
        lab = student.page
        lab_folder(student, lab_hub, "data/obs")
        # the extension's setting, as the Settings Editor saves it
        status = lab.evaluate(
            """async url => {
                const xsrf = document.cookie.match(/_xsrf=([^;]+)/)[1];
                const r = await fetch(url, {method: 'PUT', headers: {'X-XSRFToken': xsrf},
                    body: JSON.stringify({raw: '{"openIn": "lab-tab"}'})});
                return r.status;
            }""",
            lab_hub.user_url(LAB_USER, "lab/api/settings/carta-hub:plugin"),
        )
        assert status == 204
        lab.reload()
        lab.locator(".jp-DirListing-item").first.wait_for()
        right_click(lab, CUBE)
        since = len(lab_hub.log())
        lab.locator(MENU_ITEM.format(OPEN)).click()
        frame = lab.frame_locator(".jp-MainAreaWidget iframe")
        frame.locator(".connectivity-icon.online").wait_for()
        assert wait_opened(lab_hub, since) == [("obs", CUBE)]
        assert lab.locator(".lm-TabBar-tab", has_text=f"CARTA: {CUBE}").count() == 1
        assert len(student.context.pages) == 1
        student.screenshot("student-open-in-carta-lab-tab")


def test_the_link_route_answers_the_owner_only(lab_hub, carta_hub):
    if not lab_hub.server(LAB_USER):  # the browser tests started it
        lab_hub.start_server(LAB_USER)
    lab_hub.api("POST", f"/users/{OTHER}", json={})
    owner, other = user_token(lab_hub, LAB_USER), user_token(lab_hub, OTHER)
    r = link(lab_hub, LAB_USER, f"data/obs/{CUBE}", owner)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "url": f"/user/{LAB_USER}/carta/?folder=obs&file=ngc1333%20cube.fits",
        "kind": "image",
    }
    assert "token" not in r.json()["url"]
    assert link(lab_hub, LAB_USER, "data/obs", other).status_code == 403
    # the tests' service may use every server, but this route is the owner's
    assert link(lab_hub, LAB_USER, "data/obs", lab_hub.api_token).status_code == 403
    r = link(lab_hub, LAB_USER, "nothing-here.fits", owner)
    assert r.status_code == 404 and "does not exist" in r.json()["message"]

    # CARTA-only: CARTA is the server's root; the Jupyter root is the home it started in
    carta_hub.start_server(CARTA_USER)
    r = link(carta_hub, CARTA_USER, "data/obs/calibration", user_token(carta_hub, CARTA_USER))
    assert r.status_code == 200, r.text
    assert r.json() == {"url": f"/user/{CARTA_USER}/?folder=obs/calibration", "kind": "folder"}
    assert link(carta_hub, CARTA_USER, "data", carta_hub.api_token).status_code == 403
    carta_hub.stop_server(CARTA_USER)


def test_deep_link_through_login_and_spawn(browser, carta_hub, artifacts):  # noqa: F811
    """A course page's link: a logged-out student logs in, waits for the spawn, and CARTA
    opens the image."""
    carta_hub.stop_server(CARTA_USER) if carta_hub.server(CARTA_USER) else None
    since = len(carta_hub.log())
    with Student(browser, artifacts, "deep-link", timeout=120) as student:
        page = student.page
        page.goto(f"{carta_hub.url}/hub/user-redirect/?folder=obs&file={CUBE}")
        page.wait_for_url("**/hub/login**")
        page.fill("#username_input", CARTA_USER)
        page.fill("#password_input", carta_hub.password)
        page.click("#login_submit")
        page.wait_for_url(re.compile(re.escape(carta_hub.user_url(CARTA_USER)) + r"\?"))
        query = parse_qs(urlsplit(page.url).query)
        assert query == {"folder": ["obs"], "file": [CUBE]}
        pending = carta_hub.url + "/hub/spawn-pending/" + CARTA_USER
        assert [r for r in student.requests if r.url.startswith(pending)]  # the progress page
        student.wait_connected()
        assert wait_opened(carta_hub, since) == [("obs", CUBE)]
        student.screenshot("student-deep-link")
