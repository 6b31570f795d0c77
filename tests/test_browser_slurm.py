"""A student's CARTA on Slurm, in a real browser (Chromium) with the real carta-frontend 6.0.0:
PAM login, the spawn form, the progress page following the Slurm job (queued while another
job fills the node, then running), CARTA connected with the student's folder in its File
Browser, and logout ending the job.

The Slurm cluster, the PAM students, the Hub's account with the sudo rule and the login-node
Hub are tests/helpers/slurm.py's, configured as in tests/test_slurm_hub.py
(tests/helpers/login_node.py), with jupyterhub_config/culling.py loaded (logout stops the
server) and the progress page shown at once (``slow_spawn_timeout = 0``). The backend in the
job is carta-standin, a stand-in for carta_backend (NOT CARTA: it lists folders, it cannot
open images).
"""

import os
import pwd
import re
from pathlib import Path

import pytest
from helpers.browser import OFFLINE, ONLINE, Student, browser  # noqa: F401  (fixture)
from helpers.login_node import ALICE, BOB, CONFIG, FITS, POLL, job_of
from helpers.ports import wait_for
from helpers.procs import carta_uids
from helpers.slurm import CountingSqueue, SlurmHub

CULLING = Path(__file__).parent.parent / "jupyterhub_config" / "culling.py"
EXTRA = f"""
load_subconfig("{CULLING}")
c.JupyterHub.tornado_settings = {{"slow_spawn_timeout": 0}}  # the progress page at once
c.CartaBackend.starting_folder = "{{home}}/observations"  # filled in by the job, as the student
"""
DATA = "alice-browser-obs.fits"
QUEUED = re.compile(
    r"Slurm job (\d+) is waiting in the queue "
    r"\(Slurm reason: (Resources|Priority)\)"
)
BUSY = """#!/bin/sh
#SBATCH --cpus-per-task={cpus} --mem=1G --time=10:00 --chdir=/tmp --output=/dev/null
sleep 600
"""


def fill_the_node(slurm):
    """A job of another student holding every CPU still idle (other tests' sessions may hold
    some), so that the next job has to wait in the queue."""
    idle = int(slurm.run("sinfo", "-h", "-o", "%C").stdout.split("/")[1])
    assert idle >= 2, "the test node has no idle CPUs left"
    return slurm.submit(BUSY.format(cpus=idle), user=BOB)


@pytest.fixture(scope="module")
def site(slurm, students, hub_account):
    entry = pwd.getpwnam(ALICE)
    folder = Path(entry.pw_dir) / "observations"
    folder.mkdir(exist_ok=True)
    (folder / DATA).write_bytes(FITS)
    for path in (folder, folder / DATA):
        os.chown(path, entry.pw_uid, entry.pw_gid)
    squeue = CountingSqueue()
    site = SlurmHub(slurm, squeue, POLL, CONFIG + EXTRA)
    yield site
    site.close()
    slurm.cancel_all()
    squeue.remove()


@pytest.fixture(scope="module")
def alice(browser, artifacts):  # noqa: F811
    """Alice's browser, kept across this module's two tests (session, then logout)."""
    with Student(browser, artifacts, "slurm", timeout=120) as student:
        yield student


def test_spawn_form_progress_and_carta(site, slurm, students, alice):
    hub, page = site.hub, alice.page
    # the cluster is busy: another student's job holds every idle CPU of the node
    busy = fill_the_node(slurm)
    slurm.wait_state(busy, ("RUNNING",))

    alice.login(hub.url, ALICE, students[ALICE])
    page.wait_for_url(f"{hub.url}/hub/spawn**")  # no server yet: the spawn form
    # the profile: partition, cores, memory, wall time
    page.select_option("#carta-partition", "debug")
    page.select_option("#carta-cores", "2")
    page.fill("#carta-memory_gb", "1")
    page.select_option("#carta-runtime", "0:30:00")
    alice.screenshot("slurm-spawn-form")

    # The progress page reloads itself when CARTA is ready, and the Hub then sends it to
    # CARTA: cancel that reload (the page stays, as for a slower start) to look at the page.
    pending = f"{hub.url}/hub/spawn-pending/{ALICE}"
    page.route(pending + "*", lambda route: route.abort("aborted"))
    page.click("#spawn_form button[type=submit]")
    page.wait_for_url(pending + "*")
    page.click("#progress-details summary")  # the page's "Event log"
    log = page.locator("#progress-log .progress-log-event")
    queued = log.filter(has_text=QUEUED).first
    queued.wait_for()
    (job,) = job_of(slurm, ALICE, "PENDING")
    assert QUEUED.search(queued.inner_text()).group(1) == job
    slurm.run("scancel", busy)  # the node frees up

    log.filter(has_text="is running on node").wait_for()
    log.filter(has_text="Server ready at").wait_for()
    events = log.all_inner_texts()
    alice.screenshot("slurm-progress")
    assert "Submitting your CARTA job to Slurm" in events, events
    assert f"Slurm job {job} is running on node localhost; CARTA is starting" in events, events
    assert job_of(slurm, ALICE) == [job]
    detail = slurm.run("squeue", "-h", "-j", job, "-o", "%P %C %m %l %u").stdout.split()
    assert detail == ["debug", "2", "1G", "30:00", ALICE]

    page.unroute(pending + "*")
    page.goto(pending)  # the page's own reload: the Hub sends the browser to CARTA
    page.wait_for_url(hub.user_url(ALICE) + "**")
    alice.wait_connected()
    # the File Browser opens in {home}/observations, below the top level /home
    assert DATA in alice.files(DATA)
    assert alice.folder() == [ALICE, "observations"]
    alice.assert_healthy()
    alice.screenshot("slurm-carta")
    assert carta_uids(ALICE) == [pwd.getpwnam(ALICE).pw_uid]


def test_logout_ends_the_job(site, slurm, alice):
    hub, carta = site.hub, alice.page
    if not job_of(slurm, ALICE) or not carta.locator(ONLINE).count():
        pytest.skip("needs the CARTA session of test_spawn_form_progress_and_carta")
    (job,) = job_of(slurm, ALICE)

    hub_tab = alice.context.new_page()  # CARTA stays open in the first tab
    hub_tab.goto(f"{hub.url}/hub/home")
    with hub_tab.expect_navigation():
        hub_tab.click("#logout")
    hub_tab.wait_for_url(re.compile(r".*/hub/(login|logout).*"))

    carta.wait_for_selector(OFFLINE)  # the frontend's own "Disconnected from server"
    alice.screenshot("slurm-after-logout", page=carta)
    wait_for(
        lambda: not slurm.run("squeue", "-h", "-u", ALICE).stdout.strip(),
        30,
        "squeue to list no job of the student",
    )
    assert slurm.jobs()[job][0] in ("CANCELLED", "COMPLETED")
    assert not hub.server(ALICE)
    wait_for(lambda: not carta_uids(ALICE), 30, "the student's CARTA to exit")
