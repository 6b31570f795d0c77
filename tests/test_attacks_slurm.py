"""Attacks on the Slurm deployment (real Hub + CHP + Slurm, PAM students, CARTASlurmSpawner,
stand-in backend ``carta-standin``, NOT CARTA). Each test fails if the attack works.

- forged spawn options (form post, REST API, query string): newline/``#SBATCH`` injection,
  shell metacharacters, path traversal, out-of-range resources, other users' identities,
  operator settings: refused before anything is submitted (sbatch calls are counted);
- UID 0, a system account or an unmapped identity: no job;
- a login name or home (from the mapping file) that would reach batchspawner's shell commands
  or an #SBATCH line: a newline, a space and a command, ``$(...)``, a relative or unnormalised
  home: no job, no command, and the spawn page says why;
- another student plants symlinks where the job's output used to go, or reads its log: the
  job writes only its 0600 log (and a node-local one in a folder of its own);
- another student (another unix user on the same node) connects straight to a student's
  backend and wrapper ports, or reads their token from /proc: refused. Of the student's
  processes only the wrapper (which demands Hub auth) and Slurm's own srun listen beyond
  loopback;
- another student opens the student's CARTA through the proxy: refused.

Shares the site of tests/test_faults_slurm.py (``fault_site``, conftest.py).
"""

import asyncio
import os
import pwd
import secrets
import subprocess
from pathlib import Path
from urllib.parse import quote

import pytest
import websockets
from helpers.client import connect
from helpers.faults import ALICE, BOB, GROUP, STUDENTS, ensure_session, job_of, live_jobs
from helpers.hubpages import post_form
from helpers.ports import wait_for
from helpers.probe import assert_refused, probe_as
from helpers.procs import cmdline, environ, listening
from helpers.users import ensure_user, remove_user

PWNED = "/tmp/carta-hub-attack-pwned"
FORGED = [
    ({"partition": "debug\n#SBATCH --uid=0"}, "Partition"),
    ({"partition": "debug\r\n#SBATCH --wrap=id"}, "Partition"),
    ({"runtime": "0:30:00\n#SBATCH --uid=0"}, "is not offered"),
    ({"cores": "1 --uid=0"}, "is not offered"),
    ({"cores": f"$(touch {PWNED})"}, "is not offered"),
    ({"cores": f"`touch {PWNED}`"}, "is not offered"),
    ({"memory_gb": f"2; touch {PWNED}"}, "not a whole number"),
    ({"memory_gb": "1e9"}, "not a whole number"),
    ({"memory_gb": "-1"}, "not a whole number"),
    ({"memory_gb": "0"}, "outside 1-2"),
    ({"memory_gb": "64"}, "outside 1-2"),
    ({"memory_gb": "99999999999999999999"}, "not a whole number"),
    ({"cores": "64"}, "is not offered"),
    ({"gpus": "1"}, "is not offered"),
    ({"runtime": "99:00:00"}, "is not offered"),
    ({"account": "root"}, "is not offered"),
    ({"qos": "high"}, "is not offered"),
    ({"mode": "lab; id"}, "is not offered"),
    ({"folder": f"/home/{BOB}"}, "not inside your folders"),
    ({"folder": f"/home/{ALICE}/../{BOB}"}, "plain absolute path"),
    ({"folder": f"/home/{ALICE}/./x"}, "plain absolute path"),
    ({"folder": f"/home/{ALICE}//x"}, "plain absolute path"),
    ({"folder": f"home/{ALICE}"}, "plain absolute path"),
    ({"folder": f"/home/{ALICE}/x y"}, "plain absolute path"),
    ({"folder": f"/home/{ALICE}/$(id)"}, "plain absolute path"),
    ({"folder": f"/home/{ALICE}\n#SBATCH --uid=0"}, "plain absolute path"),
    ({"folder": f"/home/{ALICE}:/etc"}, "plain absolute path"),
    ({"folder": f"/home/{ALICE},/etc"}, "plain absolute path"),
    ({"username": BOB}, "Unknown option"),
    ({"login": BOB}, "Unknown option"),
    ({"uid": "0"}, "Unknown option"),
    ({"home": f"/home/{BOB}"}, "Unknown option"),
    ({"binds": "/:/host"}, "Unknown option"),
    ({"mounts": "/etc:/etc"}, "Unknown option"),
    ({"req_prologue": f"touch {PWNED}"}, "Unknown option"),
    ({"exec_prefix": f"touch {PWNED};"}, "Unknown option"),
    ({"sbatch_options": "--uid=0"}, "Unknown option"),
]
# only through the REST API: values that are not strings
FORGED_JSON = [
    ({"cores": [1, 2]}, "is not offered"),
    ({"cores": True}, "is not offered"),
    ({"memory_gb": 1.5}, "not a whole number"),
    ({"folder": {"path": f"/home/{ALICE}"}}, "plain absolute path"),
    ({"partition": None}, "is not offered"),
]


@pytest.fixture(scope="module")
def quiet_site(fault_site):
    """The site with no server of alice or bob running (a running server skips the form)."""
    for name in (ALICE, BOB):
        if fault_site.hub.server(name):
            fault_site.hub.stop_server(name)
    return fault_site


def test_forged_spawn_options_submit_nothing(quiet_site, slurm):
    site, hub = quiet_site, quiet_site.hub
    session = hub.login(ALICE, STUDENTS[ALICE])
    jobs, submitted = live_jobs(slurm), site.submissions()
    for form, message in FORGED:
        r = post_form(hub, session, ALICE, form)
        assert message in r.text, (form, r.status_code, r.text[-2000:])
        api = hub.api("POST", f"/users/{ALICE}/server", json=form)
        assert api.status_code == 400 and message in api.text, (form, api.text)
    for form, message in FORGED_JSON:
        api = hub.api("POST", f"/users/{ALICE}/server", json=form)
        assert api.status_code == 400 and message in api.text, (form, api.text)
    api = hub.api("POST", f"/users/{ALICE}/server", json=["partition", "debug"])
    assert api.status_code == 400, api.text
    # the spawn URL's query string (a link someone sends the student)
    r = session.get(f"{hub.url}/hub/spawn/{ALICE}?opt-partition=" + quote("debug\n#SBATCH --uid=0"))
    assert "Partition" in r.text and not hub.server(ALICE).get("pending")
    # a field repeated (the second one is what a naive parser would keep)
    data = {"cores": ["1", "1 --uid=0"], "_xsrf": [session.cookies.get("_xsrf", path="/hub/")]}
    r = session.post(f"{hub.url}/hub/spawn/{ALICE}", data=data, allow_redirects=False)
    assert "must be given exactly once" in r.text, r.text[-2000:]
    # alice starting bob's server with her own login
    r = post_form(hub, session, BOB, {})
    assert r.status_code in (403, 404), r.status_code

    assert site.submissions() == submitted
    assert live_jobs(slurm) == jobs
    assert not hub.server(ALICE) and not hub.server(BOB)
    assert not os.path.exists(PWNED)
    # control: a valid choice is submitted, and counted
    ensure_session(site, ALICE)
    assert site.submissions() == submitted + 1


@pytest.mark.parametrize(
    "name, message",
    [
        ("root", "UID 0"),
        ("daemon", "UID 1 "),  # a system account (outside the allowed UIDs)
        ("cf-gone", "No POSIX identity"),  # a Hub user whose account was deleted since
    ],
)
def test_privileged_or_unmapped_identity_gets_no_job(fault_site, slurm, name, message):
    site, hub = fault_site, fault_site.hub
    jobs, submitted = live_jobs(slurm), site.submissions()
    if name == "cf-gone":
        ensure_user(name)  # (the Hub's PAM authenticator adds only existing accounts)
    try:
        assert hub.api("POST", f"/users/{name}").status_code in (201, 409)
    finally:
        if name == "cf-gone":
            remove_user(name)
    r = hub.api("POST", f"/users/{name}/server", json={})
    assert r.status_code == 400 and message in r.text, r.text
    r = hub.api("POST", f"/users/{name}/server", json={"cores": "1"})
    assert r.status_code == 400 and message in r.text, r.text
    assert site.submissions() == submitted and live_jobs(slurm) == jobs
    assert not hub.server(name)
    assert not [u for _, (_, u) in slurm.jobs().items() if u in (name, "root", "daemon")]


MALLORY = "cf-mallory"
MALLORY_PASSWORD = secrets.token_hex(8)
# identities a mapping file, auth_state or nss could give: a login that ends batchspawner's
# `sudo -u` line (the rest ran as the Hub's account) or runs a command; a home that adds an
# #SBATCH line, runs a command, or is relative or not normalised (--chdir elsewhere)
UNSAFE_IDENTITIES = [
    ({"name": f"{MALLORY}\n"}, "is not a valid login name"),
    ({"name": f"{MALLORY} ; touch {PWNED}"}, "is not a valid login name"),
    ({"name": f"$(touch {PWNED})"}, "is not a valid login name"),
    ({"home": f"/home/{MALLORY}\n#SBATCH --uid=0"}, "is not a plain absolute path"),
    ({"home": f"/home/{MALLORY} ; touch {PWNED}"}, "is not a plain absolute path"),
    ({"home": f"/home/$(touch {PWNED})"}, "is not a plain absolute path"),
    ({"home": f"home/{MALLORY}"}, "is not a plain absolute path"),
    ({"home": f"/home/{MALLORY}/../{ALICE}"}, "is not a plain absolute path"),
    ({"home": f"/home//{MALLORY}"}, "is not a plain absolute path"),
]


@pytest.fixture
def mallory(fault_site):
    """A student whose identity comes from the site's mapping file."""
    entry = ensure_user(MALLORY, password=MALLORY_PASSWORD, home_mode="0700")
    subprocess.run(["usermod", "-aG", GROUP, MALLORY], check=True)
    yield {"uid": entry.pw_uid, "gid": entry.pw_gid, "name": MALLORY, "home": entry.pw_dir}
    fault_site.map_identities({})
    if fault_site.hub.server(MALLORY):
        fault_site.hub.stop_server(MALLORY)
    remove_user(MALLORY)


def test_unsafe_identities_submit_nothing(fault_site, slurm, mallory):
    """Each unsafe login or home: the spawn page says why, the form and the REST API submit
    nothing (no sbatch call, no job as anyone), no command runs."""
    site, hub = fault_site, fault_site.hub
    session = hub.login(MALLORY, MALLORY_PASSWORD)
    jobs, submitted = slurm.jobs(), site.submissions()
    for forged, message in UNSAFE_IDENTITIES:
        site.map_identities({MALLORY: {**mallory, **forged}})
        page = session.get(f"{hub.url}/hub/spawn/{MALLORY}")
        assert page.status_code == 403 and message in page.text, (forged, page.text[-2000:])
        r = post_form(hub, session, MALLORY, {"cores": "1"})
        assert message in r.text, (forged, r.status_code, r.text[-2000:])
        api = hub.api("POST", f"/users/{MALLORY}/server", json={})
        assert api.status_code == 400 and message in api.text, (forged, api.text)
        assert not hub.server(MALLORY), forged
    assert site.submissions() == submitted and slurm.jobs() == jobs
    assert not os.path.exists(PWNED)
    assert hub.api("GET", "/").status_code == 200
    # control: the same student with a safe mapping entry gets a job, from the mapping
    site.map_identities({MALLORY: {**mallory, "name": MALLORY}})
    page = session.get(f"{hub.url}/hub/spawn/{MALLORY}")
    assert page.status_code == 200 and 'name="cores"' in page.text
    r = post_form(hub, session, MALLORY, {"cores": "1"})
    assert r.status_code == 302, r.text[-2000:]
    wait_for(lambda: hub.server(MALLORY).get("ready"), 30, "mallory's server")
    assert site.submissions() == submitted + 1
    assert [user for job, (_, user) in slurm.jobs().items() if job not in jobs] == [MALLORY]


def test_job_logs_are_private_and_unpredictable(fault_site, slurm):
    """Another student can neither read the job's log nor make the job write where they
    choose: Slurm's own output was a predictable file on the node (opened by slurmstepd as the
    student, following symlinks, truncating); the job log is 0600 (the Hub's umask was 022)."""
    site = fault_site
    if site.hub.server(ALICE):
        site.hub.stop_server(ALICE)
    alice = pwd.getpwnam(ALICE)
    keep = Path(alice.pw_dir) / "keep.txt"
    keep.write_text("alice's file\n")
    os.chown(keep, alice.pw_uid, alice.pw_gid)
    # bob learns the next job ids (Slurm counts up) and plants symlinks to alice's file where
    # her job's output used to go
    first = int(slurm.submit("#!/bin/sh\n#SBATCH --output=/dev/null --chdir=/tmp\ntrue\n", BOB))
    planted = [Path(f"/tmp/carta-hub-{ALICE}-{first + i}.log") for i in range(1, 6)]
    for path in planted:
        subprocess.run(["sudo", "-u", BOB, "ln", "-s", str(keep), str(path)], check=True)
    try:
        ensure_session(site, ALICE)
        job = job_of(slurm, ALICE)
        assert int(job) <= first + len(planted)
        assert keep.read_text() == "alice's file\n"
        assert all(path.is_symlink() for path in planted)
        log = Path(alice.pw_dir) / f".carta-hub-slurm-{job}.log"
        assert "carta-hub: job" in log.read_text()
        assert (log.stat().st_uid, oct(log.stat().st_mode)) == (alice.pw_uid, oct(0o100600))
    finally:
        for path in planted:
            path.unlink(missing_ok=True)
        keep.unlink()


def alice_session_processes():
    """``{pid: role}`` of cf-alice's CARTA session (the job's processes, as her uid)."""
    uid, found = pwd.getpwnam(ALICE).pw_uid, {}
    for pid in map(int, filter(str.isdigit, os.listdir("/proc"))):
        try:
            if os.stat(f"/proc/{pid}").st_uid != uid:
                continue
        except OSError:
            continue
        argv = cmdline(pid)
        if any(a.endswith(b"/carta-standin") for a in argv[:2]):
            found[pid] = "backend"
        elif any(
            a.endswith((b"/carta-hub-singleuser", b"/batchspawner-singleuser")) for a in argv[:2]
        ):
            found[pid] = "wrapper"
        else:
            found[pid] = argv[0].decode(errors="replace").rsplit("/", 1)[-1]
    return found


def test_another_student_cannot_bypass_the_hub(fault_site, open_tmp):
    ensure_session(fault_site, ALICE)
    uid = pwd.getpwnam(ALICE).pw_uid
    roles = alice_session_processes()
    sockets = [s for s in listening() if s[3] == uid]
    backends, wrappers = {}, {}
    for address, port, pid, _, command in sockets:
        role = roles.get(pid, command)
        if role == "backend":
            assert address == "127.0.0.1", (address, port)
            backends[f"{ALICE}:{port}"] = port
        elif role == "wrapper":
            wrappers[ALICE] = (port, f"/user/{ALICE}/")
        else:  # Slurm's own step I/O ports (authenticated by Slurm); nothing else of hers
            assert role == "srun" or address in ("127.0.0.1", "::1"), (address, port, role)
    assert len(backends) == 1 and wrappers, sockets
    session_pids = [pid for pid, role in roles.items() if role in ("backend", "wrapper")]
    for pid in session_pids:  # tokens never on a (world-readable) command line
        assert not any(b"token" in a.lower() for a in cmdline(pid)), cmdline(pid)
    (backend,) = [pid for pid, role in roles.items() if role == "backend"]
    control = (next(iter(backends.values())), environ(backend)[b"CARTA_AUTH_TOKEN"].decode())
    found = probe_as(BOB, backends, wrappers, session_pids, open_tmp, control)
    assert found["uid"] == pwd.getpwnam(BOB).pw_uid and "control" in found
    assert_refused(found)


def test_another_student_through_the_proxy_is_refused(fault_site):
    hub = fault_site.hub
    ensure_session(fault_site, ALICE)
    bob = hub.login(BOB, STUDENTS[BOB])
    for path in ("", "api/database/preferences"):
        r = bob.get(hub.user_url(ALICE, path))
        assert r.status_code == 403, (path, r.status_code)
        assert "preferences" not in r.text and "<title>CARTA</title>" not in r.text
    with pytest.raises(websockets.InvalidStatus) as refused:
        asyncio.run(_open(hub, bob))
    assert refused.value.response.status_code in (302, 403)


async def _open(hub, session):
    async with connect(hub, session, ALICE):
        pass
