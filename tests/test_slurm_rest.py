"""Slurm through slurmrestd (carta_hub.hub.slurm.rest): the real slurmrestd of Slurm 22.05,
run as its own unprivileged account with JWT authentication, in front of the test cluster.

First SlurmRest on its own (tokens, the version, each error a site meets), then a real Hub
that has no sudo rule and no munge key (jupyterhub_config/slurm-rest.py).
"""

import asyncio
import os
import pwd
import re
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from helpers.ports import free_port, wait_for
from helpers.slurm import SlurmRestd

from carta_hub.hub.slurm import rest as rest_module
from carta_hub.hub.slurm.rest import SlurmRest, SlurmRestError, job_properties

ALICE = "cs-alice"


@pytest.fixture(scope="module")
def restd(slurm):
    server = SlurmRestd(slurm).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def key_dir():
    folder = Path(tempfile.mkdtemp(prefix="carta-rest-key-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder)


@pytest.fixture
def client(restd, slurm):
    return SlurmRest(restd.url, str(slurm.jwt_key), lifetime=30)


@pytest.fixture
def outdir(students):
    """A folder the student's job writes its output to."""
    folder = Path(tempfile.mkdtemp(prefix="carta-rest-out-", dir="/tmp"))
    entry = pwd.getpwnam(ALICE)
    os.chown(folder, entry.pw_uid, entry.pw_gid)
    yield folder
    shutil.rmtree(folder)


def script(outdir, body="sleep 300", header=""):
    return f"""#!/bin/bash
# a comment before the options, as in carta-hub's template
#SBATCH --job-name=carta-rest
#SBATCH --output={outdir}/job.out
#SBATCH --chdir={outdir}
#SBATCH --export=FOO,PATH
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=2
#SBATCH --mem=1G
#SBATCH --partition=short
#SBATCH --time=0:30:00
{header}
umask 077
#SBATCH --partition=nonexistent (after the first command: sbatch ignores it)
echo "uid=$(id -u) foo=$FOO pwd=$PWD"
{body}
"""


def run(coro):
    return asyncio.run(coro)


def test_submit_list_cancel_as_the_student(client, slurm, students, outdir, restd):
    env = {"FOO": "from the Hub", "PATH": "/usr/bin:/bin"}
    before = restd.submissions()
    job = run(client.submit(ALICE, script(outdir), env))
    assert restd.submissions() == before + 1
    slurm.wait_state(job, ("RUNNING",))
    detail = slurm.run("squeue", "-h", "-j", job, "-o", "%u %P %C %m %l %j").stdout.split()
    assert detail == [ALICE, "short", "2", "1G", "30:00", "carta-rest"]
    out = outdir / "job.out"
    wait_for(out.exists, 30, "the job's output")
    wait_for(lambda: "pwd=" in out.read_text(), 30, "the job's first line")
    uid = pwd.getpwnam(ALICE).pw_uid
    assert out.read_text().split("\n")[0] == f"uid={uid} foo=from the Hub pwd={outdir}"

    info = run(client.jobs())[job]
    assert (info.state, info.node) == ("RUNNING", "localhost")
    assert info.start_time <= time.time() and info.end_time - info.start_time == 30 * 60
    run(client.cancel(ALICE, job))
    slurm.wait_state(job, ("CANCELLED",))
    run(client.cancel(ALICE, job))  # already over: no error
    assert run(client.jobs())[job].state == "CANCELLED"


def test_operator_raises_the_time_limit(client, slurm, students, outdir):
    job = run(client.submit(ALICE, script(outdir), {"PATH": "/bin"}))
    slurm.wait_state(job, ("RUNNING",))
    try:
        with pytest.raises(SlurmRestError, match="Access/permission denied"):
            run(SlurmRest(client.url, client.key_file, operator=ALICE).set_time_limit(job, 60))
        run(client.set_time_limit(job, 60))
        assert slurm.run("squeue", "-h", "-j", job, "-o", "%l").stdout.strip() == "1:00:00"
    finally:
        run(client.cancel(ALICE, job))


@pytest.mark.parametrize("name", ["root", "alice\nroot", "-u", ""])
def test_no_token_for_root_or_bad_names(client, restd, outdir, name):
    before = restd.submissions()
    with pytest.raises(SlurmRestError, match="No Slurm token for"):
        run(client.submit(name, script(outdir), {"PATH": "/bin"}))
    assert restd.submissions() == before


def test_refused_job_names_slurms_reason(client, outdir, restd):
    header = "#SBATCH --qos=nope\n#SBATCH -p nonexistent"
    with pytest.raises(SlurmRestError, match="Invalid partition name specified"):
        run(client.submit(ALICE, script(outdir, header=header), {"PATH": "/bin"}))


def test_options_slurmrestd_cannot_take_are_refused_before_submitting(client, outdir, restd):
    before = restd.submissions()
    with pytest.raises(SlurmRestError, match=r"#SBATCH --mail-type cannot be passed"):
        run(client.submit(ALICE, script(outdir, header="#SBATCH --mail-type=END"), {}))
    assert restd.submissions() == before


def test_job_properties():
    props = job_properties(
        "#!/bin/sh\n#SBATCH -J x -p debug --time 1-02:03:04\n#SBATCH --mem=512 -c4 --exclusive\n"
        "\n#SBATCH --gres=gpu:2 --constraint=carta  # a comment\nhostname\n#SBATCH --qos=late\n"
    )
    assert props == {
        "name": "x",
        "partition": "debug",
        "time_limit": 1 * 1440 + 2 * 60 + 3 + 1,
        "memory_per_node": 512,
        "cpus_per_task": 4,
        "exclusive": "exclusive",
        "gres": "gpu:2",
        "constraints": "carta",
    }
    assert job_properties("#!/bin/sh\n#SBATCH --time=90 --nodes=2-3 --mem=2G")["nodes"] == [2, 3]
    with pytest.raises(SlurmRestError, match="not a value Slurm reads"):
        job_properties("#!/bin/sh\n#SBATCH --time=UNLIMITED\n")


def test_wrong_key_is_named(restd, key_dir, outdir):
    bad = key_dir / "wrong.key"
    bad.write_bytes(os.urandom(32))
    client = SlurmRest(restd.url, str(bad))
    with pytest.raises(SlurmRestError) as e:
        run(client.submit(ALICE, script(outdir), {"PATH": "/bin"}))
    assert f"jwt_key_file ({bad}) is not the key of the cluster's" in str(e.value)
    with pytest.raises(SlurmRestError, match="cannot read the Slurm JWT key"):
        run(SlurmRest(restd.url, str(key_dir / "missing")).jobs())


def test_clock_skew_is_named(client, monkeypatch, outdir):
    real = time.time
    monkeypatch.setattr(rest_module.time, "time", lambda: real() - 600)  # the Hub lags
    with pytest.raises(SlurmRestError) as e:
        run(client.submit(ALICE, script(outdir), {"PATH": "/bin"}))
    assert re.search(r"the Hub's clock is (59[89]|60[012]) s behind slurmctld's", str(e.value))
    assert "jwt_lifetime" in str(e.value)


def test_unreachable_is_named(slurm):
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(SlurmRestError, match=f"slurmrestd at {url} is unreachable"):
        run(SlurmRest(url, str(slurm.jwt_key)).jobs())


def test_a_version_carta_hub_does_not_speak(slurm):
    old = SlurmRestd(slurm, version="v0.0.37").start()
    try:
        with pytest.raises(SlurmRestError) as e:
            run(SlurmRest(old.url, str(slurm.jwt_key)).jobs())
    finally:
        old.stop()
    assert "offers the Slurm REST API v0.0.37; carta-hub speaks v0.0.38" in str(e.value)
