"""Save before the end (issue 21): with scripting on, the student's server saves the open CARTA
tab as a workspace ``autosave-<date>-<time>`` before the session ends, and the next server
offers it in CARTA's tab with a link to ``?workspace=``.

- In Chromium with the real carta-frontend 6.0.0 (a local Hub, CARTA-only servers,
  jupyterhub_config/autosave.py with a 60 s ``idle_timeout``): 30 s after the student's last
  action the frontend saves itself through the scripting channel and the stand-in keeps the
  workspace in ``~/.carta/config/workspaces`` as carta_backend does; the banner says so; the
  next server's tab offers it, and the offer's link opens CARTA with the workspace loaded;
  the server after that does not offer it again.
- The rules: tests/test_autosave_rules.py.
"""

import json
import os
import re
import stat
import time
from pathlib import Path

import pytest
import requests
from helpers.browser import Student, browser  # noqa: F401  (fixture)
from helpers.hub import SAME_USER_CARTA
from playwright.sync_api import expect

EXAMPLE = Path(__file__).parent.parent / "jupyterhub_config" / "autosave.py"
BANNER, TEXT, RESTORE = "#carta-hub-banner", "#carta-hub-banner-text", "#carta-hub-restore"
IDLE, LEAD, WARN = 60, 30, 55
SAVER = "saver"
NAME = re.compile(r"autosave-\d{4}-\d{2}-\d{2}-\d{4}")
TOKENS = '\nc.JupyterHub.load_roles[0]["scopes"].append("tokens")\n'
CONFIG = (
    SAME_USER_CARTA
    + TOKENS
    + f"""
load_subconfig("{EXAMPLE}")
c.CartaBackend.top_level_folder = "{{home}}"
c.CartaBackend.offline = True
c.CartaBackend.idle_timeout = {IDLE}
c.CartaBackend.warn_before_end = [{WARN}]
c.CartaBackend.autosave_before_end = {LEAD}
"""
)


@pytest.fixture(scope="module")
def hub(hub_factory, hub_unix_user):
    hub = hub_factory(CONFIG)
    home = hub.workdir / "homes" / SAVER
    home.mkdir(parents=True)
    os.chown(hub.workdir / "homes", hub_unix_user.pw_uid, hub_unix_user.pw_gid)
    os.chown(home, hub_unix_user.pw_uid, hub_unix_user.pw_gid)
    hub.start_server(SAVER)
    return hub


def session_json(hub):
    hub.api("POST", f"/users/{SAVER}", json={})
    r = hub.api("POST", f"/users/{SAVER}/tokens", json={"expires_in": 600})
    token = r.json()["token"]
    r = requests.get(
        hub.user_url(SAVER, "carta-hub/session"), headers={"Authorization": f"token {token}"}
    )
    assert r.status_code == 200, r.text
    return r.json()


def restart(hub):
    hub.stop_server(SAVER)
    hub.start_server(SAVER)


def test_saved_before_idle_end_and_offered_next_time(browser, hub, artifacts):  # noqa: F811
    home = hub.workdir / "homes" / SAVER
    with Student(browser, artifacts, "autosave", timeout=60) as student:
        page = student.page
        student.login(hub.url, SAVER, hub.password)
        page.wait_for_url(hub.user_url(SAVER) + "**")
        student.wait_connected()
        started = time.monotonic()
        # nothing is saved while the student is within the idle timeout minus the lead
        expect(page.locator(TEXT)).to_contain_text("CARTA will close in", timeout=20000)
        assert "saved" not in page.inner_text(TEXT)
        expect(page.locator(TEXT)).to_contain_text(
            "Your work was saved as workspace", timeout=40000
        )
        assert IDLE - LEAD - 6 <= time.monotonic() - started, "saved too early"
        (name,) = NAME.findall(page.inner_text(TEXT))
        student.assert_healthy()
        state = session_json(hub)  # the tab is still open: nothing to offer yet
        assert state["autosave"]["saved"] == [name] and state["restore"] is None

    # the real frontend's workspace, stored by the stand-in where carta_backend stores it
    saved = home / ".carta" / "config" / "workspaces" / f"{name}.json"
    workspace = json.loads(saved.read_text())
    assert workspace["description"] == "Workspace exported from CARTA"
    assert workspace["frontendVersion"] == "6.0.0"
    record = home / ".carta" / "carta-hub-autosave.json"
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    assert json.loads(record.read_text())["workspaces"] == [name]

    restart(hub)  # the next session: a new server
    with Student(browser, artifacts, "autosave-restore", timeout=60) as student:
        page = student.page
        student.login(hub.url, SAVER, hub.password)
        page.wait_for_url(hub.user_url(SAVER) + "**")
        student.wait_connected()
        # this test's idle warning comes 5 s after the last action and goes first: closed,
        # the band shows the offer (with the usual 15 min warning it shows at once)
        expect(page.locator(TEXT)).to_contain_text("CARTA will close in")
        page.click("#carta-hub-banner-close")
        expect(page.locator(TEXT)).to_contain_text("Your last CARTA session was saved at")
        assert name in page.inner_text(TEXT) and "idle" in page.inner_text(TEXT)
        link = page.locator(RESTORE)
        assert (
            link.get_attribute("href")
            == f"{hub.user_url(SAVER)}?workspace={name}".split(hub.url, 1)[1]
        )
        student.screenshot("autosave-restore")
        since = len(student.console)
        with page.expect_response(lambda r: f"/api/database/workspace/{name}" in r.url) as got:
            link.click()
        assert got.value.status == 200
        page.wait_for_url(f"**?workspace={name}")
        student.wait_connected(since=since)
        expect(page.locator(TEXT)).to_contain_text("CARTA will close in")
        page.click("#carta-hub-banner-close")
        expect(page.locator(BANNER)).to_be_hidden()  # no offer on the page that opened it
        assert "Could not load workspace" not in page.inner_text("body")
        student.assert_healthy()
    assert session_json(hub)["restore"]["workspaces"] == [name]

    restart(hub)  # offered once: the session after that has nothing to offer
    assert session_json(hub)["restore"] is None
