"""The session's clock in CARTA's tab (issue 21): ``<server>/carta-hub/session`` and the
banner the wrapper adds to CARTA's page, in Chromium with the real carta-frontend 6.0.0.

- Idle (a local Hub, CARTA-only servers, ``c.CartaBackend.offline``): with a 60 s
  ``idle_timeout`` and a banner 45 s before the end, "CARTA will close in N s unless you use
  it" appears 15 s after the student's last action and goes away when they use CARTA again.
- Wall time (a real Slurm cluster, tests/helpers/slurm.py; run under
  ``flock /tmp/carta-slurm.lock``): the JSON's end is ``scontrol show job``'s EndTime, and the
  banner appears at the configured lead time.
- Nobody else's token reads or extends a student's clock (403).

The backend is carta-standin (not CARTA), which keeps --idle_timeout as carta_backend does.
"""

import re
import subprocess
import time
from datetime import datetime

import pytest
import requests
from helpers.browser import FILE_NAMES, Student, browser  # noqa: F401  (fixture)
from helpers.hub import SAME_USER_CARTA
from helpers.login_node import ALICE, BOB, CONFIG, POLL, job_of
from helpers.slurm import CountingSqueue, SlurmHub
from playwright.sync_api import expect
from test_slurm_extend import EXTEND_CONFIG, timelimit_rule  # noqa: F401  (fixture)

BANNER, TEXT, CLOCK = "#carta-hub-banner", "#carta-hub-banner-text", "#carta-hub-clock"
IDLE, IDLE_LEAD = 60, 45
IDLER, OTHER = "idler", "other"
FITS = b"SIMPLE  =                    T" + b" " * 2850
# the tests' service may also make tokens for users (owner and non-owner requests)
TOKENS = '\nc.JupyterHub.load_roles[0]["scopes"].append("tokens")\n'
IDLE_CONFIG = (
    SAME_USER_CARTA
    + TOKENS
    + f"""
c.CartaBackend.top_level_folder = "{{home}}"
c.CartaBackend.offline = True
c.CartaBackend.idle_timeout = {IDLE}
c.CartaBackend.warn_before_end = [{IDLE_LEAD}]
"""
)


def clock_json(hub, name, token):
    r = requests.get(
        hub.user_url(name, "carta-hub/session"), headers={"Authorization": f"token {token}"}
    )
    assert r.status_code == 200, r.text
    return r.json()


def user_token(hub, name):
    hub.api("POST", f"/users/{name}", json={})
    r = hub.api("POST", f"/users/{name}/tokens", json={"expires_in": 3600})
    assert r.status_code in (200, 201), r.text
    return r.json()["token"]


def assert_refused(hub, owner, token):
    """Every clock route of ``owner``'s server refuses ``token``."""
    headers = {"Authorization": f"token {token}"}
    for method, path in (
        ("GET", "carta-hub/session"),
        ("POST", "carta-hub/session/extend"),
        ("GET", "carta-hub/banner.js"),
    ):
        r = requests.request(method, hub.user_url(owner, path), headers=headers)
        assert r.status_code == 403, (method, path, r.status_code, r.text[:300])


@pytest.fixture(scope="module")
def idle_hub(hub_factory, hub_unix_user):
    hub = hub_factory(IDLE_CONFIG)
    home = hub.workdir / "homes" / IDLER
    home.mkdir(parents=True)
    (home / "idle-m51.fits").write_bytes(FITS)
    subprocess.run(["chown", "-R", hub_unix_user.pw_name, str(hub.workdir / "homes")], check=True)
    hub.start_server(IDLER)
    return hub


def test_idle_warning_appears_and_goes_when_used(browser, idle_hub, artifacts):  # noqa: F811
    hub = idle_hub
    with Student(browser, artifacts, "clock-idle", timeout=60) as student:
        page = student.page
        student.login(hub.url, IDLER, hub.password)  # the Hub sends the browser to CARTA
        page.wait_for_url(hub.user_url(IDLER) + "**")
        student.wait_connected()
        banner = page.locator(BANNER)
        # the student has just arrived: the quiet indicator only
        expect(page.locator(CLOCK)).to_have_text(re.compile(r"^\d+ s left$"), timeout=10000)
        assert not banner.is_visible()
        started = time.monotonic()

        expect(page.locator(TEXT)).to_contain_text("CARTA will close in", timeout=40000)
        shown_after = time.monotonic() - started
        assert "unless you use it" in page.inner_text(TEXT)
        token = user_token(hub, IDLER)
        state = clock_json(hub, IDLER, token)
        assert state["reason"] == "idle"
        assert 0 < state["ends_at"] - state["now"] <= IDLE_LEAD + 1, state
        # within a few seconds of the lead time: the connection came < 5 s before `started`
        assert IDLE - IDLE_LEAD - 6 <= shown_after <= IDLE - IDLE_LEAD + 3, shown_after
        # the band sits between the menu bar and CARTA's panels, which moved down
        band = banner.bounding_box()
        panels = page.locator(".flexlayout__layout").bounding_box()
        menu = page.locator(".root-menu").bounding_box()
        assert menu["y"] + menu["height"] <= band["y"] + 1
        assert band["y"] + band["height"] <= panels["y"], (band, panels)
        student.screenshot("clock-idle-warning")

        # the student uses CARTA (a click on a file asks the backend for its header)
        page.locator(FILE_NAMES, has_text="idle-m51.fits").click()
        expect(banner).to_be_hidden(timeout=10000)
        state = clock_json(hub, IDLER, token)
        assert state["ends_at"] - state["now"] > IDLE_LEAD, state
        student.assert_healthy()


def test_other_users_token_is_refused(idle_hub):
    hub = idle_hub
    assert_refused(hub, IDLER, user_token(hub, OTHER))
    # the owner's own token is served
    assert clock_json(hub, IDLER, user_token(hub, IDLER))["reason"] == "idle"


# --- Slurm: the job's wall time ---

RUNTIME = 30 * 60
WALL_LEAD = RUNTIME - 75  # the banner 75 s after the job starts
# jupyterhub_config/slurm-extend.py: 1 h steps
SLURM_CONFIG = (
    CONFIG + EXTEND_CONFIG + TOKENS + f"\nc.CartaBackend.warn_before_end = [{WALL_LEAD}]\n"
)


@pytest.fixture(scope="module")
def slurm_site(slurm, students, hub_account, timelimit_rule):  # noqa: F811
    squeue = CountingSqueue()
    site = SlurmHub(slurm, squeue, POLL, SLURM_CONFIG)
    yield site
    site.close()
    slurm.cancel_all()
    squeue.remove()


def job_field(slurm, job, name):
    out = slurm.run("scontrol", "show", "job", job).stdout
    (value,) = [f.split("=", 1)[1] for f in out.split() if f.startswith(name + "=")]
    return value


def end_time(slurm, job):
    """``scontrol show job``'s EndTime (local time) as epoch seconds."""
    return datetime.fromisoformat(job_field(slurm, job, "EndTime")).timestamp()


def test_wall_time_banner(browser, slurm_site, slurm, students, artifacts):  # noqa: F811
    hub = slurm_site.hub
    hub.start_server(ALICE, partition="debug", cores="1", memory_gb="1", runtime="0:30:00")
    (job,) = job_of(slurm, ALICE)
    state = clock_json(hub, ALICE, user_token(hub, ALICE))
    assert state["reason"] == "wall time"
    assert state["ends_at"] == end_time(slurm, job), (state, job)
    assert state["can_extend"] is True and state["step_minutes"] == 60, state

    with Student(browser, artifacts, "clock-slurm", timeout=120) as student:
        page = student.page
        student.login(hub.url, ALICE, students[ALICE])
        page.wait_for_url(hub.user_url(ALICE) + "**")
        student.wait_connected()
        left = state["ends_at"] - time.time()
        assert left > WALL_LEAD + 5, f"CARTA took too long to open ({left} s left)"
        expect(page.locator(CLOCK)).to_contain_text("min left")
        assert not page.locator(BANNER).is_visible()

        expect(page.locator(TEXT)).to_contain_text("Your CARTA session ends at", timeout=100000)
        left = end_time(slurm, job) - time.time()
        assert WALL_LEAD - 3 <= left <= WALL_LEAD, left
        assert "wall time" in page.inner_text(TEXT)
        student.assert_healthy()
        student.screenshot("clock-wall-time")

        # the student extends the session from the banner: Slurm's time limit rises by 1 h
        page.click("#carta-hub-extend:has-text('Extend by 1 h')")
        expect(page.locator(TEXT)).to_contain_text("Extended", timeout=30000)
        assert job_field(slurm, job, "TimeLimit") == "01:30:00"
        new_end = end_time(slurm, job)
        shown = page.evaluate(
            "end => new Date(end * 1000).toLocaleTimeString([], "
            "{hour: '2-digit', minute: '2-digit'})",
            new_end,
        )
        assert f"now ends at {shown}" in page.inner_text(TEXT)
        assert clock_json(hub, ALICE, user_token(hub, ALICE))["ends_at"] == new_end
        student.screenshot("clock-extended")


def test_slurm_clock_refused_to_others(slurm_site, slurm):
    hub = slurm_site.hub
    if not job_of(slurm, ALICE):
        pytest.skip("needs the session of test_wall_time_banner")
    assert_refused(hub, ALICE, user_token(hub, BOB))
