"""A real Hub on a "login node": PAM login of real unix users, configurable-http-proxy,
CARTASlurmSpawner submitting through the documented sudo rule to a real Slurm, the CARTA
stand-in run bare (``container_runtime = "none"``) by carta-hub-singleuser in the job.

The Hub runs as an unprivileged user in group ``shadow`` with the sudo rule of docs/slurm.md
(tests/helpers/slurm.py).
"""

import asyncio
import os
import pwd
import re
import threading
import time
from pathlib import Path

import pytest
import requests
from helpers.hubpages import listing, post_form, read_progress
from helpers.login_node import ALICE, BOB, CONFIG, FITS, POLL, job_of
from helpers.ports import wait_for
from helpers.procs import carta_uids, user_processes
from helpers.slurm import CountingSqueue, SlurmHub

PWNED = "/tmp/carta-hub-slurm-test-pwned"


@pytest.fixture(scope="module")
def squeue_log(hub_account):
    squeue = CountingSqueue()
    yield squeue
    squeue.remove()


@pytest.fixture(scope="module")
def site(slurm, students, hub_account, squeue_log):
    for name, data in ((ALICE, "alice-obs.fits"), (BOB, "bob-obs.fits")):
        entry = pwd.getpwnam(name)
        path = Path(entry.pw_dir) / data
        path.write_bytes(FITS)
        os.chown(path, entry.pw_uid, entry.pw_gid)
        path.chmod(0o600)
    site = SlurmHub(slurm, squeue_log, POLL, CONFIG)
    yield site
    site.close()
    slurm.cancel_all()


def spawn_with_form(hub, session, name, form, until=lambda message: False):
    """Post the spawn form (in a thread: it waits up to 10 s) and read the spawn's progress."""
    poster = threading.Thread(target=post_form, args=(hub, session, name, form))
    poster.start()
    wait_for(lambda: hub.server(name).get("pending") == "spawn", 30, f"{name}'s spawn")
    return poster, read_progress(hub, name, until)


def test_pam_login_and_form(site, students):
    hub = site.hub
    bad = requests.Session()
    bad.get(f"{hub.url}/hub/login")
    r = bad.post(
        f"{hub.url}/hub/login",
        data={"username": ALICE, "password": "wrong", "_xsrf": bad.cookies.get("_xsrf")},
    )
    assert r.status_code == 403
    session = hub.login(ALICE, students[ALICE])
    page = session.get(f"{hub.url}/hub/spawn/{ALICE}").text
    for field in (
        'name="partition"',
        'name="cores"',
        'name="memory_gb"',
        'name="runtime"',
        'name="folder"',
        '<option value="short">',
    ):
        assert field in page


FORGED = [
    ({"partition": "debug\n#SBATCH --uid=0"}, "Partition"),
    ({"cores": "1 --uid=0"}, "is not offered"),
    ({"cores": "$(touch /tmp/pwned)"}, "is not offered"),
    ({"memory_gb": "2; scancel -u root"}, "not a whole number"),
    ({"memory_gb": "64"}, "outside 1-2"),
    ({"runtime": "99:00:00"}, "is not offered"),
    ({"folder": f"/home/{BOB}"}, "not inside your folders"),
    ({"folder": f"/home/{ALICE}/../{BOB}"}, "plain absolute path"),
    ({"req_prologue": "id"}, "Unknown option"),
]


def test_forged_posts_submit_nothing(site, slurm, students):
    hub = site.hub
    session = hub.login(ALICE, students[ALICE])
    jobs_before = slurm.jobs()
    for form, message in FORGED:
        r = post_form(hub, session, ALICE, form)
        assert message in r.text, (form, r.status_code, r.text[-2000:])
        api = hub.api("POST", f"/users/{ALICE}/server", json=form)
        assert api.status_code == 400 and message in api.text, (form, api.text)
    assert slurm.jobs() == jobs_before
    assert not hub.server(ALICE)
    assert "Spawner submitting command" not in hub.log()


def test_student_session(site, slurm, students):
    hub = site.hub
    session = hub.login(ALICE, students[ALICE])
    form = {
        "partition": "debug",
        "cores": "2",
        "memory_gb": "1",
        "runtime": "0:30:00",
        "folder": f"/home/{ALICE}",
    }
    posted, messages = spawn_with_form(hub, session, ALICE, form)
    posted.join(30)
    assert hub.server(ALICE).get("ready"), messages
    text = "\n".join(messages)
    assert re.search(r"Slurm job \d+ is running on node localhost; CARTA is starting", text), text

    (job,) = job_of(slurm, ALICE)
    detail = slurm.run("squeue", "-h", "-j", job, "-o", "%P %C %m %l %j").stdout.split()
    assert detail == ["debug", "2", "1G", "30:00", "carta"]

    found = asyncio.run(listing(hub, session, ALICE, ALICE))
    assert found.success and "alice-obs.fits" in [f.name for f in found.files], found
    assert carta_uids(ALICE) == [pwd.getpwnam(ALICE).pw_uid]

    # Bob's CARTA runs as bob: it lists his own home, not alice's.
    bob = hub.login(BOB, students[BOB])
    hub.start_server(BOB, timeout=120, cores=1, memory_gb=1)
    mine = asyncio.run(listing(hub, bob, BOB, BOB))
    assert mine.success and [f.name for f in mine.files] == ["bob-obs.fits"]
    theirs = asyncio.run(listing(hub, bob, BOB, ALICE))
    assert not theirs.success and not theirs.files, theirs
    assert carta_uids(BOB) == [pwd.getpwnam(BOB).pw_uid]


def backend_argv(name):
    """The command line of ``name``'s carta-standin."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_text().split("\0")[:-1]
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"JUPYTERHUB_USER={name}".encode() in environ and any(
            a.endswith("/carta-standin") for a in argv[:2]
        ):
            return argv
    raise AssertionError(f"no backend of {name}")


def running(site, name, cores):
    """``name``'s server with ``cores`` CPUs: test_student_session's, or one started here when
    a test runs alone."""
    if not site.hub.server(name).get("ready"):
        site.hub.start_server(name, timeout=120, cores=cores, memory_gb=1)


def test_backend_threads_are_the_job_cpus(site):
    """carta_backend runs one OpenMP thread per CPU of the node unless told otherwise (the
    test node claims 64): it gets as many as the job has (``cores`` on the form)."""
    for name, cores in ((ALICE, 2), (BOB, 1)):
        running(site, name, cores)
        argv = backend_argv(name)
        threads = argv[argv.index("--omp_threads") + 1] if "--omp_threads" in argv else None
        assert threads == str(min(cores, len(os.sched_getaffinity(0)))), argv


def test_job_token_sets_only_the_port(site):
    """The server's token (readable in the job) cannot reconfigure the Hub's spawner."""
    running(site, ALICE, 2)
    ((_, environ),) = user_processes(ALICE, "carta-hub-singleuser")
    headers = {"Authorization": f"token {environ[b'JUPYTERHUB_API_TOKEN'].decode()}"}
    for body in (
        {"exec_prefix": f"touch {PWNED};"},
        {"batch_cancel_cmd": f"touch {PWNED}"},
        {"port": 1, "ip": "127.0.0.2"},
        {"port": "8888"},
        {"port": 0},
    ):
        r = requests.post(f"{site.hub.url}/hub/api/batchspawner", headers=headers, json=body)
        assert r.status_code == 400, (body, r.text)


def test_one_squeue_per_poll_interval(site, squeue_log):
    assert site.hub.server(ALICE).get("ready") and site.hub.server(BOB).get("ready")
    before, started = squeue_log.calls(), time.monotonic()
    time.sleep(4 * POLL)
    calls, intervals = squeue_log.calls() - before, (time.monotonic() - started) / POLL
    assert 1 <= calls <= intervals + 1, (calls, intervals)


def test_hub_restart_reattaches(site, slurm, students):
    (job,) = job_of(slurm, ALICE)
    site.restart()
    hub = site.hub
    assert job_of(slurm, ALICE) == [job]
    assert hub.server(ALICE).get("ready")
    session = hub.login(ALICE, students[ALICE])
    found = asyncio.run(listing(hub, session, ALICE, ALICE))
    assert "alice-obs.fits" in [f.name for f in found.files]


def test_stop_cancels_the_job(site, slurm):
    (job,) = job_of(slurm, ALICE)
    site.hub.stop_server(ALICE)
    assert slurm.jobs()[job][0] in ("CANCELLED", "COMPLETED")
    wait_for(lambda: not carta_uids(ALICE), 30, "alice's CARTA to exit")
    assert not os.path.exists(PWNED)
    assert job_of(slurm, BOB)  # bob's job is untouched


def test_queued_job_shows_the_reason_and_stop_cancels_it(site, slurm, students):
    hub = site.hub
    session = hub.login(ALICE, students[ALICE])
    form = {"partition": "short", "cores": "1", "memory_gb": "1", "runtime": "2:00:00"}
    want = "is waiting in the queue (Slurm reason: PartitionTimeLimit)"  # over short's 1 h
    posted, messages = spawn_with_form(hub, session, ALICE, form, until=lambda m: want in m)
    assert want in messages[-1], messages
    (job,) = job_of(slurm, ALICE, "PENDING")
    hub.stop_server(ALICE)
    posted.join(30)
    assert slurm.jobs()[job][0] == "CANCELLED"
