"""Issue 21, the Hub's side: a real Hub on a login node, real Slurm. A queued job's spawn page
shows Slurm's expected start; the server's token extends its own job's time limit (as the
Slurm operator, through docs/slurm.md's sudo rule) up to max_runtime and the partition's
MaxTime, with the reason when not; nobody else's token extends it; the spawn form opens with
the student's last choices, also after a Hub restart.

The Hub loads jupyterhub_config/slurm-extend.py as documented (1 h steps, 8 h at most).
"""

import re
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from helpers.hubpages import post_form, read_progress
from helpers.login_node import (
    ALICE,
    BOB,
    CONFIG,
    POLL,
    extend_api,
    extend_to_the_limit,
    job_of,
    scontrol_job,
    server_token,
)
from helpers.ports import wait_for
from helpers.slurm import HUB_USER, CountingSqueue, SlurmHub

from carta_hub.hub.slurm.form import ResourceFormMixin

ROOT = Path(__file__).parent.parent
EXTEND_CONFIG = (ROOT / "jupyterhub_config" / "slurm-extend.py").read_text()
SUDOERS = Path("/etc/sudoers.d/carta-hub-slurm-extend-test")
# Alice's choices on the form: none of them the default
ALICE_FORM = {
    "partition": "debug",
    "cores": "2",
    "memory_gb": "2",
    "runtime": "2:00:00",
    "folder": f"/home/{ALICE}",
}


def docs_rule():
    """docs/slurm.md's time-limit sudo rule, for the test Hub's user."""
    lines = (ROOT / "docs" / "slurm.md").read_text().splitlines()
    rule = [
        line.strip().replace("jupyterhub ALL", f"{HUB_USER} ALL")
        for line in lines
        if "CARTA_TIMELIMIT" in line and line.startswith("      ") and "Defaults" not in line
    ]
    assert len(rule) == 2, rule
    return "\n".join(rule) + "\n"


@pytest.fixture(scope="module")
def timelimit_rule(slurm, hub_account):
    """docs/slurm.md's rule, with its env_file naming the test cluster's slurm.conf."""
    folder = Path(tempfile.mkdtemp(prefix="carta-slurm-env-", dir="/tmp"))
    folder.chmod(0o755)
    env = folder / "slurm-env"
    env.write_text(f"SLURM_CONF={slurm.conf}\n")
    env.chmod(0o644)
    SUDOERS.write_text(docs_rule() + f"Defaults!CARTA_TIMELIMIT env_file={env}\n")
    SUDOERS.chmod(0o440)
    subprocess.run(["visudo", "-cf", str(SUDOERS)], check=True, capture_output=True)
    yield
    SUDOERS.unlink(missing_ok=True)
    env.unlink()
    folder.rmdir()


@pytest.fixture(scope="module")
def site(slurm, students, hub_account, timelimit_rule):
    squeue = CountingSqueue()
    site = SlurmHub(slurm, squeue, POLL, CONFIG + EXTEND_CONFIG)
    yield site
    site.close()
    slurm.cancel_all()
    squeue.remove()


def test_queued_job_shows_expected_start(site, slurm, students):
    """A full node: Alice's job waits, and her spawn page says when Slurm expects it to start."""
    filler = slurm.submit(
        "#!/bin/sh\n#SBATCH --cpus-per-task=64 --time=10 --output=/dev/null\nsleep 600\n", BOB
    )
    slurm.wait_state(filler, ("RUNNING",))
    hub = site.hub
    session = hub.login(ALICE, students[ALICE])
    poster = threading.Thread(target=post_form, args=(hub, session, ALICE, ALICE_FORM))
    poster.start()
    try:
        wait_for(lambda: hub.server(ALICE).get("pending") == "spawn", 30, "alice's spawn")
        messages = read_progress(hub, ALICE, lambda m: "expected to start" in m)
        (job,) = job_of(slurm, ALICE, "PENDING")
        expected = int(scontrol_job(slurm, job)["StartTime"])
        when = time.localtime(expected)  # the day too when it is not today (near midnight)
        day = "" if when[:3] == time.localtime()[:3] else time.strftime("%a %d %b ", when)
        clock = day + time.strftime("%H:%M", when)
        assert re.search(
            rf"Slurm job {job} is waiting in the queue \(Slurm reason: \w+\); expected to "
            rf"start {clock} \S+ \(in \d+ min\)",
            messages[-1],
        ), messages
    finally:
        slurm.run("scancel", filler)
        poster.join(60)
    wait_for(lambda: hub.server(ALICE).get("ready"), 120, "alice's server")


def running(site, slurm, name, **options):
    """``name``'s running job: an earlier test's, or one started here when a test runs alone."""
    if not site.hub.server(name).get("ready"):
        site.hub.start_server(name, timeout=120, **options)
    (job,) = job_of(slurm, name)
    return job


def test_extend_raises_the_time_limit(site, slurm):
    job = running(site, slurm, ALICE, **ALICE_FORM)
    token = server_token(ALICE)
    before = extend_api(site.hub, token)
    assert before.status_code == 200, before.text
    state = before.json()
    assert state == {
        "can_extend": True,
        "why_not": "",
        "step_minutes": 60,
        "max_minutes": 480,
        "time_limit_minutes": 120,
        "ends_at": float(scontrol_job(slurm, job)["EndTime"]),
    }
    r = extend_api(site.hub, token, "POST")
    assert r.status_code == 200, r.text
    shown = scontrol_job(slurm, job)
    assert shown["TimeLimit"] == "03:00:00", shown
    assert r.json() == {"time_limit_minutes": 180, "ends_at": float(shown["EndTime"])}
    assert float(shown["EndTime"]) == state["ends_at"] + 3600


def test_extend_stops_at_max_runtime(site, slurm):
    job = running(site, slurm, ALICE, **ALICE_FORM)
    token = server_token(ALICE)
    r = extend_to_the_limit(site.hub, token, slurm, job)
    state = extend_api(site.hub, token).json()
    assert not state["can_extend"] and state["why_not"] == r.json()["message"], state
    assert state["time_limit_minutes"] == 480


def test_partition_max_time_and_nobody_elses_job(site, slurm, students):
    """Bob's job on partition short (MaxTime 1 h): his token raises his limit up to 1 h, then
    is refused with that reason; Alice's job stays as it was; a token that is not a running
    server's extends nothing."""
    alice_job = running(site, slurm, ALICE, **ALICE_FORM)
    alice_before = scontrol_job(slurm, alice_job)["TimeLimit"]
    bob_job = running(site, slurm, BOB, partition="short", cores=1, memory_gb=1, runtime="0:30:00")
    bob = server_token(BOB)
    r = extend_api(site.hub, bob, "POST")
    assert r.status_code == 200 and r.json()["time_limit_minutes"] == 60, r.text
    assert scontrol_job(slurm, bob_job)["TimeLimit"] == "01:00:00"
    r = extend_api(site.hub, bob, "POST")
    assert r.status_code == 403, r.text
    assert "the longest wall time of partition short (1:00 h)" in r.json()["message"]
    assert scontrol_job(slurm, alice_job)["TimeLimit"] == alice_before

    session = site.hub.login(BOB, students[BOB])
    xsrf = {"X-XSRFToken": session.cookies.get("_xsrf", path="/hub/")}
    url = f"{site.hub.url}/hub/api"
    own = session.post(f"{url}/users/{BOB}/tokens", headers=xsrf, json={"note": "bob's own"})
    assert own.status_code == 201, own.text
    for method in ("GET", "POST"):
        r = extend_api(site.hub, own.json()["token"], method)
        assert r.status_code == 404, r.text
        r = session.request(method, f"{url}/carta-hub/extend", headers=xsrf)  # his cookie
        assert r.status_code == 404, r.text
    r = extend_api(site.hub, site.hub.api_token, "POST")  # the tests' service: no server at all
    assert r.status_code in (403, 404), r.text
    assert scontrol_job(slurm, alice_job)["TimeLimit"] == alice_before
    assert scontrol_job(slurm, bob_job)["TimeLimit"] == "01:00:00"


def test_no_extend_step_and_the_form_after_a_restart(site, slurm, students):
    """extend_step 0: can_extend is false with why; after a Hub restart, Alice's spawn form
    opens with her last choices."""
    job = running(site, slurm, ALICE, **ALICE_FORM)
    limit = scontrol_job(slurm, job)["TimeLimit"]
    site.config += "\nc.CARTASlurmSpawner.extend_step = 0\n"
    site.restart()
    wait_for(lambda: site.hub.server(ALICE).get("ready"), 60, "alice's server re-attached")
    token = server_token(ALICE)
    state = extend_api(site.hub, token).json()
    assert state["can_extend"] is False and state["step_minutes"] == 0, state
    assert state["why_not"] == "Extending sessions is not offered for this kind of session."
    r = extend_api(site.hub, token, "POST")
    assert r.status_code == 403 and r.json()["message"] == state["why_not"], r.text
    assert scontrol_job(slurm, job)["TimeLimit"] == limit

    site.hub.stop_server(ALICE)
    page = site.hub.login(ALICE, students[ALICE]).get(f"{site.hub.url}/hub/spawn/{ALICE}").text
    for selected in (
        '<option value="2" selected>2</option>',  # cores
        '<option value="2:00:00" selected>2:00:00</option>',
        '<option value="debug" selected>debug</option>',
        f'name="folder" id="carta-folder" value="/home/{ALICE}"',
        'name="memory_gb" id="carta-memory_gb" min="1" max="2" step="1" value="2"',
    ):
        assert selected in page, (selected, page[-3000:])


def test_a_choice_no_longer_offered_falls_back_to_the_default():
    class Form(ResourceFormMixin):
        pass

    form = Form(cores=[1, 4], memory_gb={"min": 1, "max": 8, "default": 2}, runtimes=["1:00:00"])
    names = {"home": "/home/a", "username": "a", "login": "a", "uid": "1", "gid": "1"}
    last = {"cores": 4, "memory_gb": 8, "runtime": "1:00:00", "folder": "/home/a/obs"}
    page = form.render_form(names, last)
    assert '<option value="4" selected>' in page and 'value="8"' in page
    assert 'value="/home/a/obs"' in page
    stale = form.render_form(names, {"cores": 2, "memory_gb": 64, "folder": "/etc", "x": 1})
    assert stale == form.render_form(names)
    assert '<option value="1" selected>' in stale and 'step="1" value="2"' in stale
