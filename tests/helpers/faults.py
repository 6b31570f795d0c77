"""The Slurm fault site that tests/test_faults_slurm.py and tests/test_attacks_slurm.py share
(a Hub on a "login node", three PAM students, the documented sudo rule, counted sbatch calls;
the ``fault_site`` fixture in conftest.py), its students' steps, and the measured fault times
both fault suites keep for docs/operations.md."""

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from .hub import VENV_BIN, dumps, start_hub
from .hubpages import listing, post_form, proxy_routes, read_progress
from .ports import free_port, wait_for
from .users import ensure_user, remove_user


def record(artifacts, name, seconds):
    """Keep a measured time for docs/operations.md (every run's, the last 20)."""
    path = artifacts / "fault-times.json"
    times = json.loads(path.read_text()) if path.exists() else {}
    samples = times.get(name) if isinstance(times.get(name), list) else []
    times[name] = (samples + [round(seconds, 2)])[-20:]
    path.write_text(json.dumps(times, indent=1, sort_keys=True))
    print(f"measured {name}: {seconds:.2f} s")


HUB_USER = "cartahub-faults"
GROUP = "carta-faults-t"
SUDOERS = Path("/etc/sudoers.d/carta-hub-faults-test")
STUDENTS = {name: secrets.token_hex(8) for name in ("cf-alice", "cf-bob", "cf-carol")}
ALICE, BOB, CAROL = STUDENTS
POLL = 2.0  # c.Spawner.poll_interval (and the shared squeue's interval)
START_TIMEOUT = 25  # c.Spawner.start_timeout: the spawner gives up 5 s before it
BACKEND_TIMEOUT = 8  # c.CartaBackend.start_timeout
FITS = b"SIMPLE  =                    T" + b" " * 2850
LIVE = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "SUSPENDED")

SBATCH = """#!/bin/sh
# counts submissions for the tests, then runs the real sbatch
echo "$(id -un) $*" >> {calls}
exec /usr/bin/sbatch "$@"
"""
BACKEND = """#!/bin/sh
# the tests' CARTA backend: carta-standin (NOT CARTA), or one that never listens
if [ -e {dir}/hang-backend ]; then
    echo "test backend: started, will never listen"
    exec sleep 600
fi
exec {venv}/carta-standin "$@"
"""
PROLOGUE = """export PATH={venv}:$PATH
if [ -e {dir}/hang-job ]; then echo "test prologue: stuck before the server starts"; sleep 600; fi"""
RULE = """Cmnd_Alias CARTA_FAULTS = /usr/bin/sbatch, {sbatch}, /usr/bin/scancel, /usr/bin/tail
{hub_user} ALL=(%{group}) NOPASSWD:SETENV: CARTA_FAULTS
"""
CONFIG = """
c.JupyterHub.hub_bind_url = "http://127.0.0.1:{hub_port}"
c.JupyterHub.authenticator_class = "pam"
c.PAMAuthenticator.open_sessions = False
c.Authenticator.allow_all = False
c.PAMAuthenticator.allowed_groups = {{{group}}}
c.JupyterHub.spawner_class = "carta-slurm"
c.JupyterHub.cleanup_servers = False
c.ConfigurableHTTPProxy.check_running_interval = 1
c.Spawner.poll_interval = {poll}
c.Spawner.start_timeout = {start_timeout}
c.CARTASlurmSpawner.container_runtime = "none"
c.CARTASlurmSpawner.req_prologue = {prologue}
c.CARTASlurmSpawner.batch_submit_cmd = {submit}
c.CARTASlurmSpawner.partitions = ["debug", "short"]
c.CARTASlurmSpawner.cores = [1, 2]
c.CARTASlurmSpawner.memory_gb = {{"min": 1, "max": 2}}
c.CARTASlurmSpawner.runtimes = ["0:30:00", "2:00:00"]
c.CartaBackend.executable = {backend}
c.CartaBackend.start_timeout = {backend_timeout}
c.CartaBackend.top_level_folder = "/home"
c.IdentityResolver.mapping_file = {mapping}
"""


class FaultSite:
    """A Hub on a "login node" with three students; ``restart()`` keeps its DB and ports."""

    def __init__(self, slurm):
        self.slurm = slurm
        self.dir = Path(tempfile.mkdtemp(prefix="carta-faults-", dir="/tmp"))
        self.dir.chmod(0o755)
        self.calls = self.dir / "sbatch-calls"
        self.calls.touch()
        self.calls.chmod(0o666)
        self.mapping = self.dir / "identities.yaml"  # empty: the students come from nss
        self.map_identities({})
        self.sbatch = self._script("sbatch", SBATCH.format(calls=self.calls))
        backend = self._script("carta-backend", BACKEND.format(dir=self.dir, venv=VENV_BIN))
        subprocess.run(["groupadd", "-f", GROUP], check=True)
        for name, password in STUDENTS.items():
            entry = ensure_user(name, password=password, home_mode="0700")
            subprocess.run(["usermod", "-aG", GROUP, name], check=True)
            data = Path(entry.pw_dir) / f"{name}-obs.fits"
            data.write_bytes(FITS)
            os.chown(data, entry.pw_uid, entry.pw_gid)
        hub_entry = ensure_user(HUB_USER)
        subprocess.run(["usermod", "-aG", "shadow", HUB_USER], check=True)
        SUDOERS.write_text(RULE.format(sbatch=self.sbatch, hub_user=HUB_USER, group=GROUP))
        SUDOERS.chmod(0o440)
        subprocess.run(["visudo", "-cf", str(SUDOERS)], check=True, capture_output=True)
        self.workdir = Path(tempfile.mkdtemp(prefix="carta-faults-hub-", dir="/tmp"))
        os.chown(self.workdir, hub_entry.pw_uid, hub_entry.pw_gid)
        self.config = CONFIG.format(
            hub_port=free_port(),
            group=dumps(GROUP),
            poll=POLL,
            start_timeout=START_TIMEOUT,
            prologue=dumps(PROLOGUE.format(venv=VENV_BIN, dir=self.dir)),
            submit=dumps(f"{self.sbatch} --parsable"),
            backend=dumps(str(backend)),
            backend_timeout=BACKEND_TIMEOUT,
            mapping=dumps(str(self.mapping)),
        )
        self.proxy_token = secrets.token_hex(16)
        self.env = {"SLURM_CONF": str(slurm.conf), "CONFIGPROXY_AUTH_TOKEN": self.proxy_token}
        self.hub = None
        self.start()

    def _script(self, name, text):
        path = self.dir / name
        path.write_text(text)
        path.chmod(0o755)
        return path

    def start(self):
        self.hub = start_hub(self.workdir, self.config, user=HUB_USER, env=self.env)

    def restart(self):
        self.hub.stop()
        self.start()

    @contextlib.contextmanager
    def flagged(self, name):
        """The test scripts see the flag file ``name`` while this is entered."""
        path = self.dir / name
        path.touch()
        try:
            yield
        finally:
            path.unlink(missing_ok=True)

    def map_identities(self, mapping):
        """c.IdentityResolver.mapping_file's content (read at every spawn)."""
        self.mapping.write_text(json.dumps(mapping))  # JSON is YAML
        self.mapping.chmod(0o644)

    def submissions(self):
        return len(self.calls.read_text().splitlines())

    def routes(self):
        return proxy_routes(self.hub, self.proxy_token)

    def close(self):
        if self.hub:
            self.hub.stop()
        self.slurm.cancel_all()
        SUDOERS.unlink(missing_ok=True)
        for name in (*STUDENTS, HUB_USER):
            remove_user(name)
        subprocess.run(["groupdel", GROUP], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self.workdir, ignore_errors=True)


def live_jobs(slurm):
    """``{job_id: user}`` of the students' jobs that are not over."""
    return {
        i: user for i, (state, user) in slurm.jobs().items() if user in STUDENTS and state in LIVE
    }


def job_of(slurm, name):
    (job,) = [i for i, user in live_jobs(slurm).items() if user == name]
    return job


def spawn(site, name, session=None, form=None):
    """The student presses Start on the spawn form; returns (progress messages, seconds)."""
    hub = site.hub
    session = session or hub.login(name, STUDENTS[name])
    started = time.monotonic()
    poster = threading.Thread(target=post_form, args=(hub, session, name, form or {}), daemon=True)
    poster.start()
    wait_for(
        lambda: hub.server(name).get("pending") == "spawn" or not poster.is_alive(),
        30,
        f"{name}'s spawn to begin",
    )
    messages = read_progress(hub, name)
    poster.join(30)
    return messages, time.monotonic() - started


def ensure_session(site, name):
    if not site.hub.server(name).get("ready"):
        messages, _ = spawn(site, name)
        assert site.hub.server(name).get("ready"), messages
    return site.hub.login(name, STUDENTS[name])


def reachable(site, name, session=None):
    """``name``'s CARTA answers ICD 30 through CHP and lists their own file."""
    session = session or site.hub.login(name, STUDENTS[name])
    found = asyncio.run(listing(site.hub, session, name, name))
    return found.success and f"{name}-obs.fits" in [f.name for f in found.files]


def gone_within(site, name, bound):
    """Seconds until the Hub no longer lists ``name``'s server (fails after ``bound``)."""
    started = time.monotonic()
    wait_for(lambda: not site.hub.server(name), bound, f"the Hub to notice {name}", 0.05)
    return time.monotonic() - started


def one_click_restart(site, name, session):
    """What the student sees at their URL, then the Launch button (one POST)."""
    page = session.get(site.hub.user_url(name))
    assert page.status_code == 424 and "Server not running" in page.text, page.status_code
    assert f"/hub/spawn/{name}" in page.text
    messages, seconds = spawn(site, name, session)
    assert site.hub.server(name).get("ready"), messages
    assert reachable(site, name, session)
    return seconds
