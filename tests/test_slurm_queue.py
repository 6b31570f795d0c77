"""CARTASlurmSpawner against a real Slurm (slurmctld + slurmd on this machine), without a
Hub: jobs run as the student, progress shows Slurm's real state, early deaths and refused
submissions are explained, stop cancels. (50 jobs through a Hub: test_slurm_scale.py.)"""

import asyncio
import pwd
from pathlib import Path

import pytest
from helpers.fakes import FakeUser
from helpers.ports import free_port, wait_for
from helpers.slurm import CountingSqueue
from jupyterhub.objects import Hub

from carta_hub.hub.slurm.spawner import CARTASlurmSpawner

ALICE = "cs-alice"


class FakeDB:
    def commit(self):
        pass


@pytest.fixture
def squeue(slurm):
    counter = CountingSqueue()
    yield counter
    counter.remove()


@pytest.fixture
def make_spawner(slurm, squeue, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", str(slurm.conf))

    def make(name=ALICE, shell="sleep 300", **traits):
        traits = {
            "container_runtime": "none",
            "req_srun": "",
            "batchspawner_singleuser_cmd": "",
            "cmd": ["/bin/sh", "-c", shell],
            "squeue_command": str(squeue.path),
            "poll_interval": 1.0,
            "startup_poll_interval": 0.5,
            **traits,
        }
        return CARTASlurmSpawner(
            user=FakeUser(name),
            db=FakeDB(),
            api_token="t",
            hub=Hub(ip="127.0.0.1", port=1, base_url="/hub/"),
            **traits,
        )

    return make


async def collect(progress, into):
    async for event in progress:
        into.append(event["message"])


async def test_job_runs_as_student_with_progress_then_stop_cancels(make_spawner, slurm, students):
    uid_file = Path(pwd.getpwnam(ALICE).pw_dir) / ".carta-test-uid"
    port = free_port()
    spawner = make_spawner(
        shell=f"id -u > {uid_file}; exec python3 -m http.server {port} --bind 127.0.0.1"
    )
    messages = []
    starting = asyncio.ensure_future(spawner.start())
    watcher = asyncio.ensure_future(collect(spawner.progress(), messages))
    await asyncio.to_thread(wait_for, uid_file.exists, 60, "the job to run")
    spawner.port = port  # what batchspawner-singleuser reports through the Hub API
    assert await asyncio.wait_for(starting, 30) == ("localhost", port)
    await asyncio.wait_for(watcher, 10)
    assert uid_file.read_text().strip() == str(pwd.getpwnam(ALICE).pw_uid)
    assert messages[0].startswith(("Submitting", f"Slurm job {spawner.job_id}"))
    assert f"Slurm job {spawner.job_id} is running on node localhost; CARTA is starting" in messages
    assert messages[-1] == f"CARTA is up on localhost:{port}; connecting"
    assert slurm.jobs()[spawner.job_id] == ("RUNNING", ALICE)

    assert await spawner.poll() is None
    job_id = spawner.job_id
    await spawner.stop()
    assert slurm.jobs()[job_id][0] == "CANCELLED"
    assert await spawner.poll() == 1


async def test_queued_job_shows_the_reason(make_spawner, slurm, students):
    spawner = make_spawner(partitions=["short"], runtimes=["2:00:00"])  # over short's 1 h limit
    messages = []
    starting = asyncio.ensure_future(spawner.start())
    watcher = asyncio.ensure_future(collect(spawner.progress(), messages))
    want = "is waiting in the queue (Slurm reason: PartitionTimeLimit)"
    await asyncio.to_thread(wait_for, lambda: any(want in m for m in messages), 30, want)
    job_id = spawner.job_id
    starting.cancel()
    watcher.cancel()
    await spawner.stop()
    assert slurm.jobs()[job_id][0] == "CANCELLED"


async def test_job_dying_before_ready_is_explained(make_spawner, students):
    spawner = make_spawner(shell="echo 'CARTA: cannot read /ceph/missing'; exit 3")
    with pytest.raises(RuntimeError) as info:
        await asyncio.wait_for(spawner.start(), 60)
    text = str(info.value)
    assert "ended before CARTA was ready" in text and "Slurm state FAILED" in text, text
    assert "NonZeroExitCode" in text and "CARTA: cannot read /ceph/missing" in text, text
    assert not spawner.job_id


async def test_server_dying_after_reporting_its_port_is_explained(make_spawner, students):
    spawner = make_spawner(shell="sleep 2; echo 'carta-hub-singleuser: no CARTA backend'; exit 1")
    # the port is reported (as batchspawner-singleuser does first), but nothing listens there
    asyncio.get_running_loop().call_later(0.5, setattr, spawner, "port", free_port())
    with pytest.raises(RuntimeError, match="(?s)Slurm state FAILED.*no CARTA backend"):
        await asyncio.wait_for(spawner.start(), 60)


async def test_refused_submission_is_explained(make_spawner, students):
    spawner = make_spawner(partitions=["nosuchpartition"])
    with pytest.raises(RuntimeError, match="Slurm refused the CARTA job: .*[Ii]nvalid partition"):
        await spawner.start()
