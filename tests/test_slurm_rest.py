"""Slurm through slurmrestd (carta_hub.hub.slurm.rest): the real slurmrestd of Slurm 22.05,
run as its own unprivileged account with JWT authentication, in front of the test cluster.

First SlurmRest on its own (tokens, the version, each error a site meets), then a real Hub
that has no sudo rule and no munge key (jupyterhub_config/slurm-rest.py).
"""

import asyncio
import html
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from helpers.ports import free_port, wait_for
from helpers.slurm import SlurmRestd

from carta_hub.hub.slurm import extend as extend_module
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
    with pytest.raises(SlurmRestError) as e:  # what extend and carta-hub check read
        run(client.partitions())
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


# --- a real Hub on the slurmrestd path ---

REST_HUB_USER = "cartahub-rest"  # no sudo rule, no munge key: only PAM's group shadow
CAROL = "cs-carol"  # in the students' group, but with a UID the identity rules refuse
CAROL_UID = 65100
FAIL_MARK = ".carta-rest-test-fail"  # in a home: that student's job fails in its prologue
HUB_CONFIG = """
load_subconfig("slurm-rest.py", path={configs})
load_subconfig("slurm-extend.py", path={configs})
c.CARTASlurmSpawner.slurmrestd_url = {url}
c.CARTASlurmSpawner.jwt_key_file = {key}
c.JupyterHub.hub_bind_url = "http://127.0.0.1:{hub_port}"
c.JupyterHub.authenticator_class = "pam"
c.PAMAuthenticator.open_sessions = False
c.Authenticator.allow_all = False
c.PAMAuthenticator.allowed_groups = {{{group}}}
c.JupyterHub.spawner_class = "carta-slurm"
c.JupyterHub.cleanup_servers = False
c.Spawner.poll_interval = {poll}
c.IdentityResolver.allowed_uids = (1000, 65000)
c.CARTASlurmSpawner.container_runtime = "none"
c.CARTASlurmSpawner.req_prologue = {prologue}
"""


@pytest.fixture(scope="module")
def rest_site(slurm, students, hub_account, restd):
    """A Hub run as REST_HUB_USER with jupyterhub_config/slurm-rest.py, its own key copy."""
    from helpers.hub import VENV_BIN, dumps, start_hub
    from helpers.login_node import CONFIG, POLL
    from helpers.slurm import GROUP, STUDENTS
    from helpers.users import ensure_user, remove_user

    entry = ensure_user(REST_HUB_USER)
    subprocess.run(["usermod", "-aG", "shadow", REST_HUB_USER], check=True)
    ensure_user(CAROL, uid=CAROL_UID, password=STUDENTS[ALICE])
    subprocess.run(["usermod", "-aG", GROUP, CAROL], check=True)
    workdir = Path(tempfile.mkdtemp(prefix="carta-rest-hub-", dir="/tmp"))
    os.chown(workdir, entry.pw_uid, entry.pw_gid)
    prologue = f'export PATH={VENV_BIN}:$PATH; [ ! -e "$HOME/{FAIL_MARK}" ] || '
    prologue += '{ echo "carta-rest-test: this job fails on purpose"; exit 3; }'
    config = HUB_CONFIG.format(
        configs=dumps(str(Path(__file__).parent.parent / "jupyterhub_config")),
        url=dumps(restd.url),
        key=dumps(str(restd.key_for(REST_HUB_USER, workdir))),
        hub_port=free_port(),
        group=dumps(GROUP),
        poll=POLL,
        prologue=dumps(prologue),
    )
    site = RestSite(workdir, config + CONFIG, start_hub)
    yield site
    site.hub.stop()
    slurm.cancel_all()
    shutil.rmtree(workdir, ignore_errors=True)
    remove_user(CAROL)
    remove_user(REST_HUB_USER)


class RestSite:
    def __init__(self, workdir, config, start_hub):
        self.workdir, self.config, self._start = workdir, config, start_hub
        self.hub = None
        self.start()

    def start(self):
        # no SLURM_CONF: the Hub has nothing of the cluster but slurmrestd's URL and the key
        env = {"SLURM_CONF": "/nonexistent/slurm.conf"}
        self.hub = self._start(self.workdir, self.config, user=REST_HUB_USER, env=env)

    def restart(self):
        self.hub.stop()
        self.start()


def spawn(site, name, password, form, until=lambda message: False):
    """Post the spawn form as ``name``; the progress messages (the form post's page too)."""
    import threading

    from helpers.hubpages import post_form, read_progress

    session = site.hub.login(name, password)
    pages = []
    poster = threading.Thread(target=lambda: pages.append(post_form(site.hub, session, name, form)))
    poster.start()
    try:
        wait_for(lambda: site.hub.server(name).get("pending") == "spawn" or pages, 30, "the spawn")
        messages = read_progress(site.hub, name, until) if not pages else []
    finally:
        poster.join(30)
    return session, messages + [html.unescape(p.text) for p in pages], pages


FORM = {"partition": "debug", "cores": "2", "memory_gb": "1", "runtime": "0:30:00"}


def test_the_hub_has_no_sudo_and_no_munge(rest_site, slurm):
    entry = pwd.getpwnam(REST_HUB_USER)
    assert entry.pw_uid != 0
    hub_pid = rest_site.hub.proc.pid
    assert Path(f"/proc/{hub_pid}").stat().st_uid == entry.pw_uid
    as_hub = ["setpriv", f"--reuid={REST_HUB_USER}", f"--regid={REST_HUB_USER}", "--init-groups"]
    assert subprocess.run([*as_hub, "sudo", "-n", "true"], capture_output=True).returncode
    key = slurm.root / "munge" / "munge.key"
    assert subprocess.run([*as_hub, "cat", str(key)], capture_output=True).returncode


def test_student_session_through_slurmrestd(rest_site, slurm, students, restd):
    from helpers.hubpages import listing
    from helpers.login_node import job_of
    from helpers.procs import carta_uids

    before = restd.submissions()
    form = {**FORM, "folder": f"/home/{ALICE}"}
    session, messages, _ = spawn(rest_site, ALICE, students[ALICE], form)
    hub = rest_site.hub
    wait_for(lambda: hub.server(ALICE).get("ready"), 60, "alice's server")
    assert restd.submissions() == before + 1
    text = "\n".join(messages)
    assert re.search(r"Slurm job \d+ is running on node localhost; CARTA is starting", text), text
    (job,) = job_of(slurm, ALICE)
    detail = slurm.run("squeue", "-h", "-j", job, "-o", "%P %C %m %l %u").stdout.split()
    assert detail == ["debug", "2", "1G", "30:00", ALICE]
    assert carta_uids(ALICE) == [pwd.getpwnam(ALICE).pw_uid]
    found = asyncio.run(listing(hub, session, ALICE, ALICE))
    assert found.success, found  # the ICD handshake and a listing, through CHP and the wrapper
    assert "Spawner submitting command" not in hub.log()  # no sbatch, no sudo


def test_forged_posts_and_refused_identities_submit_nothing(rest_site, students, restd):
    hub = rest_site.hub
    before = restd.submissions()
    session = hub.login("cs-bob", students["cs-bob"])
    from helpers.hubpages import post_form

    for form, message in (
        ({"partition": "debug\n#SBATCH --uid=0"}, "Partition"),
        ({"cores": "1 --uid=0"}, "is not offered"),
        ({"runtime": "99:00:00"}, "is not offered"),
        ({"req_prologue": "id"}, "Unknown option"),
    ):
        r = post_form(hub, session, "cs-bob", form)
        assert message in r.text, (form, r.text[-2000:])
    carol = hub.login(CAROL, students[ALICE])
    page = carol.get(f"{hub.url}/hub/spawn/{CAROL}")
    assert f"maps to UID {CAROL_UID}" in page.text, page.text[-2000:]
    r = post_form(hub, carol, CAROL, FORM)
    assert f"maps to UID {CAROL_UID}" in r.text
    assert restd.submissions() == before
    assert not hub.server("cs-bob") and not hub.server(CAROL)


def test_one_request_per_poll_interval(rest_site, restd):
    from helpers.login_node import POLL

    assert rest_site.hub.server(ALICE).get("ready")
    count = lambda: restd.log.read_text().count("GET /slurm/v0.0.38/jobs")
    before, started = count(), time.monotonic()
    time.sleep(4 * POLL)
    calls, intervals = count() - before, (time.monotonic() - started) / POLL
    assert 1 <= calls <= intervals + 1, (calls, intervals)


def test_failed_job_reports_its_log(rest_site, students):
    bob = "cs-bob"
    mark = Path(pwd.getpwnam(bob).pw_dir) / FAIL_MARK
    mark.touch()
    try:
        _, messages, _ = spawn(rest_site, bob, students[bob], FORM)
    finally:
        mark.unlink()
    text = "\n".join(messages)
    assert "ended before CARTA was ready" in text, text
    assert "carta-rest-test: this job fails on purpose" in text, text
    assert not rest_site.hub.server(bob)


def test_hub_restart_keeps_the_session(rest_site, slurm, students):
    from helpers.hubpages import listing
    from helpers.login_node import job_of

    (job,) = job_of(slurm, ALICE)
    rest_site.restart()
    hub = rest_site.hub
    assert hub.server(ALICE).get("ready")
    assert job_of(slurm, ALICE) == [job]
    session = hub.login(ALICE, students[ALICE])
    assert asyncio.run(listing(hub, session, ALICE, ALICE)).success


def test_partition_max_time_from_slurmrestd(client):
    """GET .../partitions as slurm_operator: short's MaxTime=60; debug, the default
    partition, has MaxTime=INFINITE (None); a partition Slurm lacks is named."""
    partitions = extend_module.rest_partitions(run(client.partitions()))
    assert extend_module.partition_max_time(partitions, "short") == 60
    assert extend_module.partition_max_time(partitions, "debug") is None
    assert extend_module.partition_max_time(partitions, "") is None
    with pytest.raises(extend_module.ExtendError, match="Slurm lists no partition gpu"):
        extend_module.partition_max_time(partitions, "gpu")


def test_extend_through_slurmrestd(rest_site, slurm, students):
    """jupyterhub_config/slurm-extend.py on the REST Hub, after a Hub restart: the server's
    token raises its job's TimeLimit (as slurm_operator through slurmrestd: the Hub has no
    Slurm commands and no sudo) up to max_runtime (8 h) and partition short's MaxTime (1 h),
    then is refused with which cap it is."""
    from helpers.login_node import (
        extend_api,
        extend_to_the_limit,
        job_of,
        scontrol_job,
        server_token,
    )

    hub = rest_site.hub
    if not hub.server(ALICE).get("ready"):  # when this test runs alone
        spawn(rest_site, ALICE, students[ALICE], FORM)
        wait_for(lambda: hub.server(ALICE).get("ready"), 60, "alice's server")
    (job,) = job_of(slurm, ALICE)
    token = server_token(ALICE)
    state = extend_api(hub, token)
    assert state.status_code == 200, state.text
    assert state.json() == {
        "can_extend": True,
        "why_not": "",
        "step_minutes": 60,
        "max_minutes": 480,
        "time_limit_minutes": 30,
        "ends_at": float(scontrol_job(slurm, job)["EndTime"]),
    }
    r = extend_api(hub, token, "POST")
    assert r.status_code == 200, r.text
    shown = scontrol_job(slurm, job)
    assert shown["TimeLimit"] == "01:30:00", shown
    assert r.json() == {"time_limit_minutes": 90, "ends_at": float(shown["EndTime"])}
    extend_to_the_limit(hub, token, slurm, job)  # 2:30 ... 7:30, 8:00, refused

    bob = "cs-bob"
    spawn(rest_site, bob, students[bob], {**FORM, "partition": "short"})
    wait_for(lambda: hub.server(bob).get("ready"), 60, "bob's server")
    try:
        (bob_job,) = job_of(slurm, bob)
        r = extend_api(hub, server_token(bob), "POST")
        assert r.status_code == 200 and r.json()["time_limit_minutes"] == 60, r.text
        assert scontrol_job(slurm, bob_job)["TimeLimit"] == "01:00:00"
        r = extend_api(hub, server_token(bob), "POST")
        assert r.status_code == 403, r.text
        assert r.json()["message"] == (
            "Your session already has the longest wall time of partition short (1:00 h)."
        )
    finally:
        hub.stop_server(bob)
    assert scontrol_job(slurm, job)["TimeLimit"] == "08:00:00"


def test_slurmrestd_down_then_back(rest_site, restd, students):
    hub, bob = rest_site.hub, "cs-bob"
    restd.stop()
    try:
        _, messages, _ = spawn(rest_site, bob, students[bob], FORM)
        text = "\n".join(messages)
        assert f"slurmrestd at {restd.url} is unreachable" in text, text
        assert "Try again in a few minutes" in text
        assert not hub.server(bob)
        time.sleep(3)
        assert hub.server(ALICE).get("ready")  # a failed query keeps running sessions
    finally:
        restd.start()
    _, messages, _ = spawn(rest_site, bob, students[bob], FORM)
    wait_for(lambda: hub.server(bob).get("ready"), 60, "bob's server")
    hub.stop_server(bob)


def test_wrong_key_is_named_on_the_spawn_page(rest_site, restd, students):
    key = rest_site.workdir / "jwt_hs256.key"
    good = key.read_bytes()
    key.write_bytes(os.urandom(32))
    try:
        _, messages, _ = spawn(rest_site, "cs-bob", students["cs-bob"], FORM)
    finally:
        key.write_bytes(good)
    text = "\n".join(messages)
    assert "is not the key of the cluster's AuthAltParameters=jwt_key" in text, text


def test_stop_cancels_the_job(rest_site, slurm):
    from helpers.login_node import job_of
    from helpers.procs import carta_uids

    (job,) = job_of(slurm, ALICE)
    rest_site.hub.stop_server(ALICE)
    assert slurm.jobs()[job][0] in ("CANCELLED", "COMPLETED")
    wait_for(lambda: not carta_uids(ALICE), 30, "alice's CARTA to exit")


def test_settings_of_the_other_transport_stop_the_hub(tmp_path):
    from traitlets.config import Config

    from carta_hub.hub.slurm.spawner import CARTASlurmSpawner

    def config(**settings):
        c = Config()
        c.CARTASlurmSpawner.update(settings)
        return c

    rest = {"slurmrestd_url": "http://127.0.0.1:1", "jwt_key_file": str(tmp_path / "k")}
    for setting in ("squeue_command", "exec_prefix", "batch_submit_cmd", "batch_cancel_cmd"):
        with pytest.raises(ValueError, match=f"{setting} has no effect .* through slurmrestd"):
            CARTASlurmSpawner(config=config(**rest, **{setting: "x"}))
    with pytest.raises(ValueError, match="jwt_key_file has no effect .* needs"):
        CARTASlurmSpawner(config=config(jwt_key_file="/k"))
    spawner = CARTASlurmSpawner(config=config(**rest))
    with pytest.raises(ValueError, match="cannot read the Slurm JWT key"):
        spawner.check_transport()
    (tmp_path / "k").write_bytes(os.urandom(32))
    spawner.check_transport()
    spawner = CARTASlurmSpawner(config=config(**rest, sbatch_options=["--mail-type=END"]))
    with pytest.raises(ValueError, match="#SBATCH --mail-type cannot be passed to slurmrestd"):
        spawner.check_transport()
    CARTASlurmSpawner(config=config(squeue_command="squeue")).check_transport()  # CLI path
