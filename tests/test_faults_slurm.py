"""Faults of the Slurm deployment on a real Hub + CHP + Slurm (slurmctld, slurmd, munged started
by tests/helpers/slurm.py), PAM students, CARTASlurmSpawner through the documented sudo rule,
the stand-in backend ``carta-standin`` (NOT CARTA) run bare in the job:

2. the job dies (``scancel``; the node fails: ``state=down`` requeues it): the Hub notices within
   a poll interval, removes the route, the student sees "Server not running" and one POST to
   the spawn URL starts a new job. A drained node keeps its running sessions; new ones queue.
3. the Hub restarts while sessions run: all of them stay reachable, no job is added or lost;
5. slurmctld is down when a student spawns: a clear error, the Hub and running sessions stay
   up, and a spawn after slurmctld is back succeeds;
6. a backend that never listens, or a job that never starts its server: the spawn fails before
   the Hub's start_timeout with the job's log tail, and no job is left;
7. a read-only or a full home, with the job log in it (the default ``log_path``): CARTA starts,
   and the job's log, kept on the node instead (in a private folder mktemp made), carries the
   warnings.

Measured times go to ``test-artifacts/fault-times.json`` (quoted in docs/operations.md).
The site (Hub user, group, sudo rule, students: tests/helpers/faults.py, the fixture
``fault_site`` in conftest.py) is shared with tests/test_attacks_slurm.py.
"""

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from helpers.faults import (
    ALICE,
    BACKEND_TIMEOUT,
    BOB,
    CAROL,
    FITS,
    POLL,
    START_TIMEOUT,
    STUDENTS,
    ensure_session,
    gone_within,
    job_of,
    live_jobs,
    one_click_restart,
    reachable,
    record,
    spawn,
)
from helpers.ports import wait_for
from helpers.slurm import NODE


def test_hub_restart_keeps_every_session(fault_site, slurm, artifacts):
    site = fault_site
    for name in (ALICE, BOB):
        ensure_session(site, name)
    jobs, submitted = live_jobs(slurm), site.submissions()
    assert sorted(jobs.values()) == [ALICE, BOB]

    started = time.monotonic()
    site.restart()
    up = time.monotonic() - started
    for name in (ALICE, BOB):
        assert site.hub.server(name).get("ready")
        assert reachable(site, name)
    back = time.monotonic() - started
    assert live_jobs(slurm) == jobs  # none orphaned, none added
    assert site.submissions() == submitted
    record(artifacts, "slurm_hub_restart_hub_up", up)
    record(artifacts, "slurm_hub_restart_sessions_reachable", back)


def test_scancel_hub_notices_and_one_click_restarts(fault_site, slurm, artifacts):
    site = fault_site
    session = ensure_session(site, ALICE)
    job = job_of(slurm, ALICE)
    assert f"/user/{ALICE}" in site.routes()

    slurm.run("scancel", job)
    noticed = gone_within(site, ALICE, 4 * POLL + 5)
    assert f"/user/{ALICE}" not in site.routes()
    assert ALICE not in live_jobs(slurm).values()
    restarted = one_click_restart(site, ALICE, session)
    assert job_of(slurm, ALICE) != job
    record(artifacts, "slurm_scancel_hub_notices", noticed)
    record(artifacts, "slurm_one_click_restart", restarted)
    assert noticed <= POLL + 1.5, noticed  # one squeue interval (+ squeue and the stop)


def test_node_failure_requeued_jobs_are_cancelled(fault_site, slurm, artifacts):
    site = fault_site
    sessions = {name: ensure_session(site, name) for name in (ALICE, BOB)}
    jobs = {name: job_of(slurm, name) for name in sessions}
    try:
        slurm.run("scontrol", "update", f"nodename={NODE}", "state=down", "reason=fault-test")
        started = time.monotonic()
        for name in sessions:
            wait_for(
                lambda: not site.hub.server(name),
                4 * POLL + 10,
                f"the Hub to notice {name}'s job was requeued",
                0.05,
            )
        noticed = time.monotonic() - started
        assert noticed <= POLL + 1.5, noticed
    finally:
        resume(slurm)  # (ReturnToService=2 may already have brought it back)
        wait_for(lambda: node_state(slurm) in ("idle", "mixed", "allocated"), 60, "the node")
    # Slurm requeued both jobs (batch jobs are requeued on node failure by default); the
    # spawner cancelled them: they can never come back as sessions the Hub does not route
    for name, job in jobs.items():
        assert slurm.jobs()[job][0] == "CANCELLED", slurm.jobs()[job]
    assert not set(jobs.values()) & set(live_jobs(slurm))
    assert not {f"/user/{n}" for n in sessions} & set(site.routes())
    restarted = one_click_restart(site, ALICE, sessions[ALICE])
    record(artifacts, "slurm_node_down_hub_notices", noticed)
    record(artifacts, "slurm_node_down_one_click_restart", restarted)


def node_state(slurm):
    return slurm.run("sinfo", "-h", "-n", NODE, "-o", "%T", check=False).stdout.split()[0]


def resume(slurm):
    slurm.run("scontrol", "update", f"nodename={NODE}", "state=resume", check=False)


def test_slurmctld_down_spawn_fails_clearly(fault_site, slurm, artifacts):
    site = fault_site
    ensure_session(site, ALICE)
    jobs = live_jobs(slurm)
    ctld = slurm.procs[1]
    assert ctld.args[0] == "slurmctld"
    ctld.send_signal(signal.SIGTERM)
    ctld.wait(30)
    try:
        messages, failed = spawn(site, CAROL)
        text = "\n".join(messages)
        assert (
            "Slurm refused the CARTA job" in text and "Unable to contact slurm controller" in text
        ), text
        assert site.hub.api("GET", "/").status_code == 200
        assert not site.hub.server(CAROL)
        assert site.hub.server(ALICE).get("ready")  # squeue fails: the Hub keeps the session
        assert reachable(site, ALICE)
    finally:
        log = open(slurm.root / "log" / "slurmctld.out", "ab")
        slurm.procs[1] = subprocess.Popen(
            ctld.args, env=slurm.env, stdout=log, stderr=subprocess.STDOUT
        )
        restarted = time.monotonic()
        wait_for(
            lambda: slurm.run("scontrol", "ping", check=False).returncode == 0, 30, "slurmctld back"
        )
    assert live_jobs(slurm) == jobs  # slurmctld recovered its jobs from its state
    # a restarted slurmctld schedules on a node only after its slurmd registered again
    # (until then jobs wait with reason ReqNodeNotAvail)
    wait_for(
        lambda: (
            "SlurmdStartTime=None" not in slurm.run("scontrol", "show", "node", "-o", NODE).stdout
        ),
        90,
        "the node to register",
    )
    registered = time.monotonic() - restarted
    messages, seconds = spawn(site, CAROL)
    assert site.hub.server(CAROL).get("ready"), messages
    assert reachable(site, CAROL)
    record(artifacts, "slurmctld_down_spawn_error", failed)
    record(artifacts, "slurmctld_back_node_registered", registered)
    record(artifacts, "slurmctld_back_spawn", seconds)


def test_drained_node_keeps_sessions_and_queues_new_ones(fault_site, slurm, artifacts):
    site = fault_site
    for name in (ALICE, CAROL):
        ensure_session(site, name)
    if site.hub.server(BOB):
        site.hub.stop_server(BOB)
    session = site.hub.login(BOB, STUDENTS[BOB])
    slurm.run("scontrol", "update", f"nodename={NODE}", "state=drain", "reason=fault-test")
    try:
        time.sleep(POLL)
        for name in (ALICE, CAROL):  # running sessions are untouched by the drain
            assert site.hub.server(name).get("ready") and reachable(site, name)
        result = []
        waiting = threading.Thread(target=lambda: result.append(spawn(site, BOB, session)))
        waiting.start()
        wait_for(lambda: BOB in live_jobs(slurm).values(), 30, "bob's job queued")
        job = job_of(slurm, BOB)
        wait_for(
            lambda: (
                slurm.run("squeue", "-h", "-j", job, "-o", "%r").stdout.strip() not in ("", "None")
            ),
            15,
            "Slurm's reason for the wait",
        )
        time.sleep(1.5)  # the spawner's next squeue (startup_poll_interval) shows it
        assert slurm.jobs()[job][0] == "PENDING"
    finally:
        undrained = time.monotonic()
        resume(slurm)
    waiting.join(START_TIMEOUT + 10)
    messages, _ = result[0]
    text = "\n".join(messages)
    assert "is waiting in the queue (Slurm reason:" in text, text
    assert site.hub.server(BOB).get("ready"), text
    assert reachable(site, BOB, session)
    record(artifacts, "slurm_undrain_queued_spawn_ready", time.monotonic() - undrained)


def test_backend_never_listening_fails_the_spawn(fault_site, slurm, artifacts):
    site = fault_site
    if site.hub.server(BOB):
        site.hub.stop_server(BOB)
    with site.flagged("hang-backend"):
        messages, seconds = spawn(site, BOB)
    text = "\n".join(messages)
    assert "ended before CARTA was ready" in text, text
    assert f"CARTA backend did not listen within {BACKEND_TIMEOUT} s" in text, text
    assert "test backend: started, will never listen" in text, text  # the log tail
    assert not site.hub.server(BOB)
    assert BOB not in live_jobs(slurm).values()
    assert seconds < START_TIMEOUT
    record(artifacts, "slurm_backend_never_ready_spawn_fails", seconds)


def test_job_never_starting_server_is_cancelled(fault_site, slurm, artifacts):
    site = fault_site
    with site.flagged("hang-job"):
        messages, seconds = spawn(site, BOB)
    text = "\n".join(messages)
    assert "CARTA was not ready within" in text and "was cancelled" in text, text
    assert "test prologue: stuck before the server starts" in text, text  # the log tail
    assert not site.hub.server(BOB)
    # scancel is asynchronous: the job leaves the queue shortly after the spawn failed
    wait_for(lambda: BOB not in live_jobs(slurm).values(), 15, "the cancelled job to end")
    job = max((i for i, (_, user) in slurm.jobs().items() if user == BOB), key=int)
    assert slurm.jobs()[job][0] == "CANCELLED"
    assert seconds < START_TIMEOUT + 2
    assert "failed to start in" not in site.hub.log()  # not the Hub's bare timeout
    record(artifacts, "slurm_job_never_ready_cancelled", seconds)


@contextlib.contextmanager
def unwritable_home(name, how):
    """``name``'s home read-only, or full: a 1 MiB tmpfs over it, with the student's FITS file,
    filled up."""
    entry = pwd.getpwnam(name)
    home = Path(entry.pw_dir)
    if how == "read-only":
        home.chmod(0o555)
        try:
            yield
        finally:
            home.chmod(0o700)
        return
    subprocess.run(
        [
            "mount",
            "-t",
            "tmpfs",
            "-o",
            f"size=1m,mode=700,uid={entry.pw_uid},gid={entry.pw_gid}",
            "tmpfs",
            str(home),
        ],
        check=True,
    )
    try:
        fits = home / f"{name}-obs.fits"
        fits.write_bytes(FITS)
        os.chown(fits, entry.pw_uid, entry.pw_gid)
        with contextlib.suppress(OSError), open(home / "filler", "wb") as f:
            while True:
                f.write(b"x" * 4096)
                f.flush()
        yield
    finally:
        subprocess.run(["umount", "--lazy", str(home)], check=True)


@pytest.mark.parametrize("how", ["read-only", "full"])
def test_unwritable_home_carta_starts_with_a_warning(fault_site, slurm, how):
    site = fault_site
    if site.hub.server(CAROL):
        site.hub.stop_server(CAROL)
    home = Path(pwd.getpwnam(CAROL).pw_dir)
    since = time.time()
    with unwritable_home(CAROL, how), removing_node_logs(since):
        session = site.hub.login(CAROL, STUDENTS[CAROL])
        messages, _ = spawn(site, CAROL, session)
        assert site.hub.server(CAROL).get("ready"), messages
        job = job_of(slurm, CAROL)
        assert reachable(site, CAROL, session)
        prefs = site.hub.user_url(CAROL, "api/database/preferences")
        assert session.get(prefs).status_code == 200
        # kept for the session (in the backend's temporary HOME), not in the home
        assert session.put(prefs, json={"colormap": "magma"}).status_code == 200
        assert session.get(prefs).json()["preferences"]["colormap"] == "magma"
        assert not (home / ".carta").exists()
        shared_log = home / f".carta-hub-slurm-{job}.log"
        node_log = private_node_log(job, CAROL, since)
        text = node_log.read_text()
        assert f"cannot write the job log {shared_log}" in text, text
        assert f"this log stays on {os.uname().nodename} in {node_log}\n" in text, text
        assert (
            f"Home folder {home} is {'not writable' if how == 'read-only' else 'full'}" in text
        ), text
        assert not shared_log.exists() or shared_log.stat().st_size == 0
        site.hub.stop_server(CAROL)


def node_log_folders(since):
    """Node-local log folders made since ``since`` (a test cluster reuses job ids)."""
    return [
        f for f in Path("/tmp").glob("carta-hub-*.??????????") if f.lstat().st_ctime >= since - 1
    ]


@contextlib.contextmanager
def removing_node_logs(since):
    try:
        yield
    finally:
        for folder in node_log_folders(since):
            shutil.rmtree(folder)


def private_node_log(job, name, since):
    """The job's node-local log: in a folder of its own that mktemp made (0700, random
    name), readable by ``name`` alone."""
    (folder,) = [f for f in node_log_folders(since) if f.name.startswith(f"carta-hub-{job}.")]
    log = folder / "job.log"
    uid = pwd.getpwnam(name).pw_uid
    assert (folder.lstat().st_uid, oct(folder.lstat().st_mode)) == (uid, oct(0o40700))
    assert (log.lstat().st_uid, oct(log.lstat().st_mode)) == (uid, oct(0o100600))
    return log
