"""50 servers of a real Hub as 50 running Slurm jobs: one squeue per poll interval, one
query to re-attach all of them after a Hub restart, stop cancels all 50.

Each job runs a tiny server (standard library only: it reports its port to the Hub as
batchspawner-singleuser does and answers HTTP), so that 50 fit on 2 cores; submission, queue
polling, the Hub's polls and cancellation are the real ones.
"""

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers.hub import dumps
from helpers.ports import wait_for
from helpers.slurm import CountingSqueue, SlurmHub
from helpers.tiny_server import TINY

ALICE = "cs-alice"
SERVERS = [f"s{i:02d}" for i in range(50)]
POLL = 2.0


@pytest.fixture(scope="module")
def squeue(hub_account):
    counter = CountingSqueue()
    (counter.folder / "tiny_server.py").write_text(TINY)
    (counter.folder / "tiny_server.py").chmod(0o644)
    yield counter
    (counter.folder / "tiny_server.py").unlink()
    counter.remove()


@pytest.fixture(scope="module")
def site(slurm, students, squeue):
    tiny = Path(squeue.folder) / "tiny_server.py"
    config = f"""
c.JupyterHub.allow_named_servers = True
c.JupyterHub.named_server_limit_per_user = {len(SERVERS) + 1}
c.CARTASlurmSpawner.cmd = ["/usr/bin/python3", {dumps(str(tiny))}]
c.CARTASlurmSpawner.batchspawner_singleuser_cmd = ""
c.CARTASlurmSpawner.req_srun = ""
c.CARTASlurmSpawner.cores = [1]
c.CARTASlurmSpawner.memory_gb = [1]
c.CARTASlurmSpawner.log_path = "/dev/null"
"""
    site = SlurmHub(slurm, squeue, POLL, config)
    yield site
    site.close()
    slurm.cancel_all()


def running_jobs(slurm):
    return [i for i, (state, user) in slurm.jobs().items() if user == ALICE and state == "RUNNING"]


def servers(hub):
    return hub.api("GET", f"/users/{ALICE}").json().get("servers", {})


def test_50_jobs_one_squeue_per_poll_then_restart_and_stop(site, slurm, squeue):
    hub = site.hub
    hub.api("POST", f"/users/{ALICE}", json={})
    with ThreadPoolExecutor(len(SERVERS)) as pool:
        posted = list(
            pool.map(
                lambda name: hub.api("POST", f"/users/{ALICE}/servers/{name}", json={}), SERVERS
            )
        )
    assert all(r.status_code in (201, 202) for r in posted), [r.text for r in posted]
    wait_for(
        lambda: sum(s["ready"] for s in servers(hub).values()) == len(SERVERS),
        240,
        "50 servers ready",
        interval=1,
    )
    assert len(running_jobs(slurm)) == len(SERVERS)

    # The Hub polls each of the 50 every POLL seconds: one squeue per interval for all.
    before, started = squeue.calls(), time.monotonic()
    time.sleep(4 * POLL)
    calls, intervals = squeue.calls() - before, (time.monotonic() - started) / POLL
    assert 1 <= calls <= intervals + 1, (calls, intervals)

    # A restarted Hub re-attaches to all 50 jobs from its database with one squeue (later
    # calls are the regular polls).
    hub.stop()
    assert len(running_jobs(slurm)) == len(SERVERS)
    before, started = squeue.calls(), time.monotonic()
    site.start()
    hub = site.hub
    first = squeue.lines()[before]
    assert len(first.split(" -j ")[1].split(",")) == len(SERVERS), first
    assert squeue.calls() - before <= 1 + (time.monotonic() - started) / POLL
    assert all(s["ready"] for s in servers(hub).values()) and len(servers(hub)) == len(SERVERS)

    with ThreadPoolExecutor(len(SERVERS)) as pool:
        list(pool.map(lambda name: hub.api("DELETE", f"/users/{ALICE}/servers/{name}"), SERVERS))
    wait_for(lambda: not servers(hub), 120, "50 servers stopped", interval=1)
    assert not running_jobs(slurm)
