"""The login-node site that tests/test_slurm_hub.py and tests/test_browser_slurm.py share: two
of helpers/slurm.py's students, their data file, the spawn form's choices, the poll interval;
how a job's server calls the Hub's extend API and how ``scontrol show job`` reads."""

import subprocess

import requests

from .procs import user_processes

ALICE, BOB = "cs-alice", "cs-bob"
FITS = b"SIMPLE  =                    T" + b" " * 2850
POLL = 2.0
CONFIG = """
c.CARTASlurmSpawner.partitions = ["debug", "short"]
c.CARTASlurmSpawner.cores = [1, 2]
c.CARTASlurmSpawner.memory_gb = {"min": 1, "max": 2}
c.CARTASlurmSpawner.runtimes = ["0:30:00", "2:00:00"]
c.CartaBackend.top_level_folder = "/home"
"""


def job_of(slurm, name, state="RUNNING"):
    return [i for i, (s, user) in slurm.jobs().items() if user == name and s == state]


def scontrol_job(slurm, job):
    """``scontrol show job``'s fields, times in epoch seconds."""
    out = subprocess.run(
        ["scontrol", "-o", "show", "job", job],
        env={**slurm.env, "SLURM_TIME_FORMAT": "%s"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(f.split("=", 1) for f in out.split() if "=" in f)


def server_token(name):
    """The API token of ``name``'s server, as its job holds it."""
    ((_, environ),) = user_processes(name, "carta-hub-singleuser")
    return environ[b"JUPYTERHUB_API_TOKEN"].decode()


def extend_api(hub, token, method="GET"):
    """``method`` on the Hub's carta-hub/extend API with ``token``, as a job's server calls it."""
    return requests.request(
        method,
        f"{hub.url}/hub/api/carta-hub/extend",
        headers={"Authorization": f"token {token}"},
        timeout=60,
    )


def extend_to_the_limit(hub, token, slurm, job):
    """Extend until the Hub refuses: it refuses at the 8:00 h max_runtime of
    jupyterhub_config/slurm-extend.py, with that reason, and Slurm's TimeLimit stays there."""
    for _ in range(8):
        r = extend_api(hub, token, "POST")
        if r.status_code != 200:
            break
    assert r.status_code == 403, r.text
    assert r.json()["message"] == (
        "Your session already has the longest wall time allowed here (8:00 h)."
    )
    assert scontrol_job(slurm, job)["TimeLimit"] == "08:00:00"
    return r
