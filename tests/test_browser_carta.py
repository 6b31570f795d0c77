"""Students in a real browser (Chromium) with the real carta-frontend 6.0.0, through a real
Hub + configurable-http-proxy and carta-hub-singleuser (CARTA-only servers).

The backend is carta-standin, a stand-in for carta_backend (NOT CARTA: it lists folders and
serves preferences, it cannot open images). Everything asserted is what the student sees in
the frontend's own DOM, plus the browser's own request events.

The site is configured as an offline HPC site would be (issue 11): the packaged preference
defaults (telemetry off, consent shown, no release check), ``c.CartaBackend.offline`` (CARTA's
page may connect to its own server only), and per-user folders from templates: each student
may browse their home (``top_level_folder = "{home}"``) and starts in ``{home}/observations``.
"""

import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
from helpers.browser import CONSENT, Student, browser  # noqa: F401  (fixture)
from helpers.hub import SAME_USER_CARTA

FITS = b"SIMPLE  =                    T" + b" " * 2850
CONFIG = (
    SAME_USER_CARTA
    + """
c.CartaBackend.top_level_folder = "{home}"
c.CartaBackend.starting_folder = "{home}/observations"
c.CartaBackend.offline = True
"""
)
DOTTED, NEWBIE, OPTED_IN = "a.student", "newbie", "opted-in"


@pytest.fixture(scope="module")
def hub(hub_factory, hub_unix_user):
    hub = hub_factory(CONFIG)
    for name in (DOTTED, NEWBIE, OPTED_IN):
        home = hub.workdir / "homes" / name
        (home / "observations").mkdir(parents=True)
        (home / "notes").mkdir()
        (home / "observations" / f"{name}-m51.fits").write_bytes(FITS)
        (home / "top-level.fits").write_bytes(FITS)
    # this student turned telemetry on in an earlier CARTA session
    config = hub.workdir / "homes" / OPTED_IN / ".carta" / "config"
    config.mkdir(parents=True)
    (config / "preferences.json").write_text(
        json.dumps({"version": 2, "telemetryMode": "usage", "telemetryConsentShown": True})
    )
    subprocess.run(["chown", "-R", hub_unix_user.pw_name, str(hub.workdir / "homes")], check=True)
    with ThreadPoolExecutor() as pool:  # their servers start together (the Hub spawns them)
        list(pool.map(hub.start_server, (DOTTED, NEWBIE, OPTED_IN)))
    return hub


def start_carta(student, hub, name):
    """Log in on the Hub's page; the Hub sends the browser to the student's CARTA. Returns
    the frontend's session ID once it says it is connected."""
    student.login(hub.url, name, hub.password)
    student.page.wait_for_url(hub.user_url(name) + "**")
    return student.wait_connected()


def open_preferences(page, tab="Global"):
    page.click('[data-testid="preference-dialog-button"]')
    page.click(f'.preference-dialog [role=tab]:has-text("{tab}")')
    return page.locator(".preference-dialog [role=tabpanel][aria-hidden=false]")


def close_preferences(page):
    page.click('[data-testid="preference-dialog-header-close-button"]')
    page.wait_for_selector(".preference-dialog", state="detached")


def test_dotted_username_preference_survives_reload(browser, hub, artifacts):  # noqa: F811
    """a.student (a dot: CARTA's own --http_url_prefix would refuse it) changes the theme in
    CARTA's Preferences dialog; it is saved through /user/a.student/api/database/preferences
    into their home and is still applied after a page reload."""
    with Student(browser, artifacts, "dotted-username") as student:
        start_carta(student, hub, DOTTED)
        page = student.page
        assert f"{DOTTED}-m51.fits" in student.files(f"{DOTTED}-m51.fits")
        student.assert_healthy()

        theme = open_preferences(page).locator(".bp6-form-group:has-text('Theme') select")
        with page.expect_response(
            lambda r: r.url.endswith("/api/database/preferences") and r.request.method == "PUT"
        ) as saved:
            theme.select_option("dark")
        assert saved.value.ok, saved.value.status
        assert saved.value.url == hub.user_url(DOTTED, "api/database/preferences")
        assert json.loads(saved.value.request.post_data) == {"theme": "dark"}
        student.screenshot("preferences-theme")
        close_preferences(page)

        logged = len(student.console)
        page.reload()
        student.wait_connected(since=logged)
        page.wait_for_selector(".App.bp6-dark")  # the dark theme is applied
        theme = open_preferences(page).locator(".bp6-form-group:has-text('Theme') select")
        assert theme.input_value() == "dark"
        close_preferences(page)
        student.files(f"{DOTTED}-m51.fits")
        student.assert_healthy()
        assert len(set(student.connected_sessions())) == 2  # one per page load
        student.screenshot()

    stored = hub.workdir / "homes" / DOTTED / ".carta" / "config" / "preferences.json"
    assert json.loads(stored.read_text())["theme"] == "dark"


def test_first_start_is_clean_offline_and_in_its_folders(browser, hub, artifacts):  # noqa: F811
    """A brand-new student: no "CARTA Usage Data" consent dialog, telemetry shown as
    Disabled, not one request leaves the browser for a host other than the Hub, and the File
    Browser opens in ``{home}/observations`` and cannot go above ``{home}``.

    carta-frontend 6.0.0 asks for the HiPS survey list (alasky.cds.unistra.fr) on every start
    and for a telemetry token unless it has one, whatever the preferences; with
    ``c.CartaBackend.offline`` the page's Content-Security-Policy makes Chromium refuse those
    before any DNS lookup or connection: such attempts show up as request events that fail
    with "csp" (listed in the artifact first-start-requests.json); any other request to a
    non-loopback host would be one that really left the browser."""
    with Student(browser, artifacts, "first-start") as student:
        start_carta(student, hub, NEWBIE)
        page = student.page
        assert student.files(f"{NEWBIE}-m51.fits") == [f"{NEWBIE}-m51.fits"]
        assert student.folder() == ["observations"]  # the configured starting folder
        assert CONSENT not in page.inner_text("body")
        student.assert_healthy()
        student.screenshot()

        panel = open_preferences(page, "Telemetry")
        assert panel.locator(".telemetry-mode-form-group select").input_value() == "none"
        assert "No data will be collected." in panel.inner_text()
        close_preferences(page)

        # the top level: the breadcrumb's first item, the student's home
        page.locator(".path-breadcrumbs .folder-breadcrumb").first.click()
        top = student.files("top-level.fits", "observations", "notes")
        assert sorted(top) == ["notes", "observations", "top-level.fits"]
        assert student.folder() == []
        student.assert_healthy()
        # the folder above (other students' homes) is refused; the listing stays
        page.click(".edit-path-button")
        path = page.locator(".directory-path-input input")
        assert path.input_value() == "/"
        path.fill("..")
        path.press("Enter")
        page.wait_for_selector(".bp6-toast:has-text('Error loading file list for directory ..')")
        student.wait_console("Forbidden path")
        assert sorted(student.files("top-level.fits")) == sorted(top)
        assert student.folder() == []
        student.screenshot("top-level-folder")

        (artifacts / "first-start-requests.json").write_text(
            json.dumps(
                [{"url": url, "failure": failure} for url, failure in student.outside_requests()],
                indent=1,
            )
        )
        assert student.sent_outside() == []
        assert not any("Failed to check new releases" in line for line in student.console)
    assert os.path.isdir(hub.workdir / "homes" / DOTTED)  # what is above: other homes


def test_opted_in_student_keeps_telemetry(browser, hub, artifacts):  # noqa: F811
    """The site default (telemetry off) never overrides a student's own saved choice."""
    with Student(browser, artifacts, "opted-in") as student:
        start_carta(student, hub, OPTED_IN)
        page = student.page
        student.files(f"{OPTED_IN}-m51.fits")
        panel = open_preferences(page, "Telemetry")
        assert panel.locator(".telemetry-mode-form-group select").input_value() == "usage"
        close_preferences(page)
        student.assert_healthy()
    stored = hub.workdir / "homes" / OPTED_IN / ".carta" / "config" / "preferences.json"
    assert json.loads(stored.read_text())["telemetryMode"] == "usage"
