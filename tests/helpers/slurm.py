"""A real one-node Slurm cluster on this machine, students, and a Hub on a "login node".

``SlurmCluster(root).start()`` writes a private munge key, a JWT key and slurm.conf under
``root``, then starts munged, slurmctld and slurmd (in the foreground, on free loopback ports;
slurmctld drops to Debian's ``slurm`` account, ``SlurmUser``, which owns its state and log
folders and the JWT key: a Slurm operator account that is not root). ``stop()`` cancels the
cluster's jobs and ends exactly the daemons it started, by PID. The node claims 64 CPUs
(``SlurmdParameters=config_overrides``) so many jobs run at once, without cgroups
(``proctrack/linuxproc``, ``task/none``). Clients find it through ``SLURM_CONF``.
``AuthAltTypes=auth/jwt`` lets slurmrestd (:class:`SlurmRestd`) pass on tokens signed with
the JWT key.
"""

import atexit
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from .hub import VENV_BIN, dumps, start_hub
from .ports import free_port, wait_for
from .users import ensure_user, remove_user

STUDENTS = {name: secrets.token_hex(8) for name in ("cs-alice", "cs-bob")}  # name: password

NODE = "localhost"
SLURM_USER = "slurm"  # SlurmUser: Debian's account of the slurm-wlm packages
PARTITIONS = ("debug", "short")

CONF = """\
ClusterName=cartahubtest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
AuthAltTypes=auth/jwt
AuthAltParameters=jwt_key={root}/jwt/jwt_hs256.key
CredType=cred/munge
AuthInfo=socket={root}/run/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
PlugStackConfig={root}/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=300
KillWait=5
InactiveLimit=0
NodeName={node} NodeAddr=127.0.0.1 CPUs=64 RealMemory=262144 State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
PartitionName=short Nodes={node} MaxTime=60 State=UP
"""


class SlurmCluster:
    def __init__(self, root):
        self.root = Path(root)
        self.conf = self.root / "slurm.conf"
        self.jwt_key = self.root / "jwt" / "jwt_hs256.key"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.procs = []

    def start(self):
        try:
            self._write_files()
            self._spawn(
                "munged",
                [
                    "munged",
                    "-F",
                    "--force",
                    f"--socket={self.root}/run/munge.socket",
                    f"--key-file={self.root}/munge/munge.key",
                    f"--pid-file={self.root}/munge/munged.pid",
                    f"--seed-file={self.root}/munge/munged.seed",
                ],
            )
            wait_for(lambda: (self.root / "run/munge.socket").exists(), 20, "munged")
            self._spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
            wait_for(
                lambda: self.run("scontrol", "ping", check=False).returncode == 0, 30, "slurmctld"
            )
            self._spawn("slurmd", ["slurmd", "-D", "-N", NODE, "-f", str(self.conf)])
            wait_for(self._node_ready, 60, "the Slurm node to be idle")
        except BaseException:
            self.stop()
            raise
        atexit.register(self.stop)
        return self

    def _write_files(self):
        for sub in ("run", "state", "spool", "log", "munge", "jwt"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        os.chmod(self.root / "run", 0o755)  # jobs and users reach munged's socket here
        os.chmod(self.root / "munge", 0o700)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o600)
        slurm = pwd.getpwnam(SLURM_USER)
        for sub in ("state", "log", "jwt"):  # slurmctld writes them as SlurmUser
            os.chown(self.root / sub, slurm.pw_uid, slurm.pw_gid)
        os.chmod(self.root / "jwt", 0o700)
        self.jwt_key.write_bytes(secrets.token_bytes(32))
        os.chown(self.jwt_key, slurm.pw_uid, slurm.pw_gid)
        os.chmod(self.jwt_key, 0o600)
        (self.root / "plugstack.conf").write_text("")
        self.conf.write_text(
            CONF.format(root=self.root, node=NODE, ctld_port=free_port(), slurmd_port=free_port())
        )
        os.chmod(self.conf, 0o644)

    def _spawn(self, name, cmd):
        log = open(self.root / "log" / f"{name}.out", "wb")
        self.procs.append(subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT))

    def _node_ready(self):
        for proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}:\n" + self.logs())
        out = self.run("sinfo", "-h", "-n", NODE, "-o", "%T", check=False).stdout
        return "idle" in out

    def run(self, *cmd, check=True, user=None, input=None):
        """A Slurm command against this cluster (as ``user`` through sudo if given)."""
        if user:
            cmd = ("sudo", "-E", "-u", user, *cmd)
        return subprocess.run(
            cmd, env=self.env, capture_output=True, text=True, check=check, input=input
        )

    def submit(self, script, user):
        """Submit ``script`` (text) as ``user``; returns the job id."""
        out = self.run("sbatch", "--parsable", user=user, input=script).stdout
        return out.strip().split(";")[0]

    def jobs(self, states="all"):
        """``{job_id: (state, user)}`` of the cluster's jobs."""
        out = self.run("squeue", "-h", f"--states={states}", "-o", "%i %T %u").stdout
        return {i: (s, u) for i, s, u in (line.split() for line in out.splitlines())}

    def wait_state(self, job_id, states, timeout=60):
        return wait_for(
            lambda: self.jobs().get(job_id, ("GONE",))[0] in states,
            timeout,
            f"job {job_id} in {states}",
        )

    def cancel_all(self, timeout=30):
        live = [i for i, (s, _) in self.jobs().items() if s in ("PENDING", "RUNNING")]
        if live:
            self.run("scancel", *live, check=False)
        wait_for(
            lambda: (
                not [
                    s for s, _ in self.jobs().values() if s in ("PENDING", "RUNNING", "COMPLETING")
                ]
            ),
            timeout,
            "the cluster's jobs to end",
        )

    def logs(self):
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted((self.root / "log").glob("*"))
        )

    def stop(self):
        """Cancel the jobs, then end the daemons this cluster started (slurmd first)."""
        if any(p.poll() is None for p in self.procs[1:]):
            try:
                self.cancel_all()
            except Exception:
                pass
        for proc in reversed(self.procs):
            _end(proc)
        self.procs = []


def _end(proc, timeout=15):
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


_shared = []


@pytest.fixture(scope="session")
def slurm():
    """The session's cluster (tests/conftest.py makes this the one fixture of that name)."""
    if not _shared:
        root = tempfile.mkdtemp(prefix="carta-slurm-", dir="/tmp")
        _shared.append(SlurmCluster(root).start())
    yield _shared[0]
    _shared[0].stop()


@pytest.fixture(scope="session")
def students():
    """Two real unix users with private homes and PAM passwords: ``{name: password}``."""
    for name, password in STUDENTS.items():
        ensure_user(name, password=password, home_mode="0700")
    yield STUDENTS
    if _shared and _shared[0].procs:
        _shared[0].cancel_all()
    for name in STUDENTS:
        remove_user(name)


HUB_USER = "cartahub-slurm"
GROUP = "carta-students-t"
SUDOERS = Path("/etc/sudoers.d/carta-hub-slurm-test")
# docs/slurm.md's rule, for this Hub user and student group
SUDO_RULE = f"""Cmnd_Alias CARTA_SLURM = /usr/bin/sbatch, /usr/bin/scancel, /usr/bin/tail
{HUB_USER} ALL=(%{GROUP}) NOPASSWD:SETENV: CARTA_SLURM
"""


@pytest.fixture(scope="session")
def hub_account(students):
    """The Hub's unprivileged user: in group shadow (PAM), with docs/slurm.md's sudo rule."""
    subprocess.run(["groupadd", "-f", GROUP], check=True)
    for name in students:
        subprocess.run(["usermod", "-aG", GROUP, name], check=True)
    ensure_user(HUB_USER)
    subprocess.run(["usermod", "-aG", "shadow", HUB_USER], check=True)
    SUDOERS.write_text(SUDO_RULE)
    SUDOERS.chmod(0o440)
    subprocess.run(["visudo", "-cf", str(SUDOERS)], check=True, capture_output=True)
    yield HUB_USER
    SUDOERS.unlink(missing_ok=True)
    remove_user(HUB_USER)
    subprocess.run(["groupdel", GROUP], capture_output=True)


class CountingSqueue:
    """An squeue wrapper anyone may run that logs each call; ``calls()`` counts them."""

    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="carta-squeue-", dir="/tmp"))
        self.folder.chmod(0o755)
        self.log, self.path = self.folder / "calls", self.folder / "squeue"
        self.log.touch()
        self.log.chmod(0o666)
        self.path.write_text(f'#!/bin/sh\necho "$*" >> {self.log}\nexec squeue "$@"\n')
        self.path.chmod(0o755)

    def lines(self):
        """The arguments of each call so far."""
        return self.log.read_text().splitlines()

    def calls(self):
        return len(self.lines())

    def remove(self):
        for path in (self.log, self.path):
            path.unlink()
        self.folder.rmdir()


def login_node_config(squeue, poll_interval, hub_port):
    """A Hub on a login node: PAM, CARTASlurmSpawner run bare, this squeue, a fixed API port."""
    return f"""
# kept across restarts (the jobs call this API); hub_bind_url wins over hub_port
c.JupyterHub.hub_bind_url = "http://127.0.0.1:{hub_port}"
c.JupyterHub.authenticator_class = "pam"
c.PAMAuthenticator.open_sessions = False
c.Authenticator.allow_all = False
c.PAMAuthenticator.allowed_groups = {{{dumps(GROUP)}}}
c.JupyterHub.spawner_class = "carta-slurm"
c.JupyterHub.cleanup_servers = False
c.Spawner.poll_interval = {poll_interval}
c.CARTASlurmSpawner.container_runtime = "none"
c.CARTASlurmSpawner.req_prologue = "export PATH={VENV_BIN}:$PATH"
c.CARTASlurmSpawner.squeue_command = {dumps(str(squeue.path))}
"""


class SlurmHub:
    """A Hub run as HUB_USER; ``restart()`` stops it (jobs stay) and starts it on the same
    database and API port."""

    def __init__(self, cluster, squeue, poll_interval, config=""):
        self.workdir = Path(tempfile.mkdtemp(prefix="carta-slurm-hub-", dir="/tmp"))
        entry = pwd.getpwnam(HUB_USER)
        os.chown(self.workdir, entry.pw_uid, entry.pw_gid)
        self.config = login_node_config(squeue, poll_interval, free_port()) + config
        self.env = {"SLURM_CONF": str(cluster.conf)}
        self.hub = None
        self.start()

    def start(self):
        self.hub = start_hub(self.workdir, self.config, user=HUB_USER, env=self.env)

    def restart(self):
        self.hub.stop()
        self.start()

    def close(self):
        """Stop the Hub and remove its folder (database, logs)."""
        self.hub.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


REST_USER = "slurmrest"  # slurmrestd's own account: neither root nor SlurmUser
REST_VERSION = "v0.0.38"


class SlurmRestd:
    """Debian's slurmrestd for ``cluster``, run as REST_USER with JWT authentication and
    OpenAPI ``version`` (v0.0.38) on a free loopback port; ``stop()`` ends it by PID, ``start()`` runs it
    again on the same port. Each request is in its log (``-vv``): :meth:`submissions`."""

    def __init__(self, cluster, version=REST_VERSION):
        ensure_user(REST_USER)
        self.cluster = cluster
        self.version = version
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = cluster.root / "log" / "slurmrestd.out"
        self.proc = None

    def start(self):
        user = REST_USER
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--"]
        cmd += ["slurmrestd", "-vv", "-a", "rest_auth/jwt", "-s", f"openapi/{self.version}"]
        cmd += [f"127.0.0.1:{self.port}"]
        env = {**self.cluster.env, "SLURM_JWT": "daemon"}
        log = open(self.log, "ab")
        self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._up, 30, "slurmrestd to answer")
        return self

    def _up(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"slurmrestd exited with {self.proc.returncode}:\n{self.logs()}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), 1):
                return True
        except OSError:
            return False

    def logs(self):
        return self.log.read_text(errors="replace")[-3000:]

    def submissions(self):
        """How many job submissions slurmrestd received so far."""
        return self.log.read_text(errors="replace").count(f"POST /slurm/{REST_VERSION}/job/submit")

    def stop(self):
        if self.proc is not None:
            _end(self.proc)
            self.proc = None

    def key_for(self, account, folder):
        """A copy of the cluster's JWT key in ``folder`` for ``account`` only (0600): the
        Hub's copy (e.g. a Kubernetes Secret on a real site)."""
        entry = pwd.getpwnam(account)
        path = Path(folder) / "jwt_hs256.key"
        path.write_bytes(self.cluster.jwt_key.read_bytes())
        os.chown(path, entry.pw_uid, entry.pw_gid)
        path.chmod(0o600)
        return path
