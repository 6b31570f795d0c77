"""What benchmarks/slurm_spawn.py and slurm_scale.py share: the test suite's real one-node
Slurm (tests/helpers/slurm.py), a timestamped counting squeue, a Hub on a "login node"
run as its own unprivileged account with docs/slurm.md's sudo rule, and, with ``rest``,
the test suite's slurmrestd (JWT) for Hubs that use it instead of sudo and the commands.

The benchmarks create their OWN Hub account, student group and sudoers file (not the test
suite's cartahub-slurm / cs-alice), so that a test session ending alongside cannot remove
them mid-measurement.
"""

import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from helpers import slurm as slurm_helpers
from helpers.hub import VENV_BIN, dumps, start_hub
from helpers.ports import free_port, wait_for
from helpers.slurm import REST_VERSION, CountingSqueue, SlurmCluster, SlurmRestd, login_node_config
from helpers.users import ensure_user, remove_user

HUB_USER = "cartahub-bench"
GROUP = "carta-bench-t"
SUDOERS = Path("/etc/sudoers.d/carta-hub-bench")
RULE = """Cmnd_Alias CARTA_BENCH = /usr/bin/sbatch, /usr/bin/scancel, /usr/bin/tail{extra}
{hub_user} ALL=(%{group}) NOPASSWD:SETENV: CARTA_BENCH
"""
STANDIN_NOTE = (
    "backend: carta-standin, the test suite's stand-in for carta_backend "
    "(NOT CARTA): figures measure what carta-hub and Slurm add, not CARTA"
)
LIVE = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING")


class TimedSqueue(CountingSqueue):
    """The counting squeue wrapper, with the wall-clock time of each call."""

    def __init__(self):
        super().__init__()
        self.path.write_text(
            f'#!/bin/sh\necho "$(date +%s.%N) $*" >> {self.log}\nexec squeue "$@"\n'
        )

    def times(self):
        return [float(line.split(" ", 1)[0]) for line in self.lines()]


class Site:
    """A Slurm cluster claiming ``cpus`` CPUs, students with PAM passwords in GROUP, the
    Hub's account in group shadow with the sudo rule, a TimedSqueue; Hubs from ``hub()``."""

    def __init__(self, students=("cb-student",), cpus=64, sudo_squeue=False, rest=False):
        self.students = {name: secrets.token_hex(8) for name in students}
        self.cpus, self.sudo_squeue, self.rest = cpus, sudo_squeue, rest
        self.dir = Path(tempfile.mkdtemp(prefix="carta-bench-", dir="/tmp"))
        self.dir.chmod(0o755)
        self.hubs, self.cluster, self.squeue, self.restd = [], None, None, None

    def __enter__(self):
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()

    def _start(self):
        slurm_helpers.CONF = slurm_helpers.CONF.replace("CPUs=64", f"CPUs={self.cpus}")
        self.squeue = TimedSqueue()
        self.cluster = SlurmCluster(self.dir / "slurm").start()
        subprocess.run(["groupadd", "-f", GROUP], check=True)
        for name, password in self.students.items():
            ensure_user(name, password=password, home_mode="0700")
            subprocess.run(["usermod", "-aG", GROUP, name], check=True)
        ensure_user(HUB_USER)
        subprocess.run(["usermod", "-aG", "shadow", HUB_USER], check=True)
        # stock batchspawner runs squeue as the user, through sudo
        extra = f", {self.squeue.path}" if self.sudo_squeue else ""
        SUDOERS.write_text(RULE.format(extra=extra, hub_user=HUB_USER, group=GROUP))
        SUDOERS.chmod(0o440)
        subprocess.run(["visudo", "-cf", str(SUDOERS)], check=True, capture_output=True)
        if self.rest:
            self.restd = SlurmRestd(self.cluster).start()
            self.jwt_key = self.restd.key_for(HUB_USER, self.dir)  # the Hub's copy, 0600

    def script(self, name, text):
        """An executable file in the site's folder (readable by everyone)."""
        path = self.dir / name
        path.write_text(text)
        path.chmod(0o755)
        return path

    def hub(self, config, poll=30.0, rest=False):
        """A Hub as HUB_USER on PAM (students of GROUP) with CARTASlurmSpawner bare and
        the site's squeue, plus ``config``; with ``rest``, through the site's slurmrestd
        (its sudo rule and squeue unused)."""
        workdir = Path(tempfile.mkdtemp(prefix="carta-bench-hub-", dir="/tmp"))
        entry = ensure_user(HUB_USER)
        os.chown(workdir, entry.pw_uid, entry.pw_gid)
        base = login_node_config(self.squeue, poll, free_port())
        base = base.replace(dumps(slurm_helpers.GROUP), dumps(GROUP))
        if rest:
            base = "\n".join(line for line in base.splitlines() if "squeue_command" not in line)
            base += (
                f"\nc.CARTASlurmSpawner.slurmrestd_url = {dumps(self.restd.url)}"
                f"\nc.CARTASlurmSpawner.jwt_key_file = {dumps(str(self.jwt_key))}\n"
            )
        hub = start_hub(
            workdir, base + config, user=HUB_USER, env={"SLURM_CONF": str(self.cluster.conf)}
        )
        self.hubs.append(hub)
        return hub

    def stop_hub(self, hub):
        hub.stop()
        self.hubs.remove(hub)
        shutil.rmtree(hub.workdir, ignore_errors=True)

    def home(self, name):
        return Path(os.path.expanduser(f"~{name}"))

    def rest_job_lists(self):
        """``GET .../jobs`` requests slurmrestd logged so far (its -vv log)."""
        return self.restd.log.read_text(errors="replace").count(f"GET /slurm/{REST_VERSION}/jobs")

    def live_jobs(self):
        return [i for i, (s, _) in self.cluster.jobs().items() if s in LIVE]

    def wait_idle(self, timeout=60):
        wait_for(lambda: not self.live_jobs(), timeout, "the cluster to be idle", interval=0.2)

    def close(self):
        for hub in self.hubs:
            try:
                hub.stop()
            except Exception as e:
                print(f"(could not stop a Hub: {e})", file=sys.stderr)
            shutil.rmtree(hub.workdir, ignore_errors=True)
        if self.restd:
            self.restd.stop()
        if self.cluster:
            self.cluster.stop()
        SUDOERS.unlink(missing_ok=True)
        for name in (*self.students, HUB_USER):
            remove_user(name)
        subprocess.run(["groupdel", GROUP], capture_output=True)
        if self.squeue:
            self.squeue.remove()
        shutil.rmtree(self.dir, ignore_errors=True)


# --- reading what happened ---

HUB_LOG_LINE = re.compile(r"^\[\w (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) ")


def hub_log_times(hub, pattern, since=0.0):
    """Wall-clock times of the Hub's log lines matching ``pattern``, at or after ``since``."""
    found = []
    for line in hub.log().splitlines():
        m = HUB_LOG_LINE.match(line)
        if m and re.search(pattern, line):
            t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
            if t >= since - 0.001:
                found.append(t)
    return found


def spread(values, fmt="{:.2f}"):
    """``median [min-max]`` of ``values``."""
    return (
        f"{fmt.format(statistics.median(values))} "
        f"[{fmt.format(min(values))}-{fmt.format(max(values))}]"
    )


def now():
    return time.time()


__all__ = [
    "Site",
    "TimedSqueue",
    "hub_log_times",
    "spread",
    "now",
    "HUB_USER",
    "GROUP",
    "STANDIN_NOTE",
    "VENV_BIN",
    "dumps",
    "free_port",
    "wait_for",
]
