"""CARTASlurmSpawner's settings against batchspawner's: the inherited settings it never reads
stop the Hub at start with a message naming what to set instead, batch_script is the job
template, and the Hub refuses to start if batchspawner's API handler would stay in place.
Real Hubs (no Slurm cluster: nothing is spawned)."""

import pytest

SLURM_HUB = """
c.JupyterHub.spawner_class = "carta-slurm"
c.CARTASlurmSpawner.container_runtime = "none"
c.CARTASlurmSpawner.req_prologue = "module load apptainer"
c.CARTASlurmSpawner.req_srun = ""
c.CARTASlurmSpawner.req_keepvars_extra = "LANG"
c.SlurmSpawner.exec_prefix = "sudo -E -u {username}"
c.BatchSpawnerBase.batch_submit_cmd = "sbatch --parsable"
"""
UNUSED = """
c.CARTASlurmSpawner.req_runtime = "1:00:00"
c.SlurmSpawner.state_pending_re = "^PENDING"
c.BatchSpawnerBase.req_partition = "gpu"
"""
# batchspawner's handler registered again after carta-hub replaced it (as a newer
# batchspawner, or another package, could): it comes first, so the Hub would serve it
BATCHSPAWNER_HANDLER_FIRST = """
from batchspawner.api import BatchSpawnerAPIHandler
from jupyterhub import apihandlers

apihandlers.default_handlers.insert(0, (r"/api/batchspawner", BatchSpawnerAPIHandler))
"""


def test_batchspawner_settings_that_apply_start_the_hub(hub_factory):
    hub = hub_factory(SLURM_HUB)
    assert hub.api("GET", "/").status_code == 200
    assert "CARTASlurmSpawner" in hub.log()


def test_unused_batchspawner_settings_stop_the_hub(hub_factory):
    with pytest.raises(RuntimeError, match="JupyterHub exited") as info:
        hub_factory(SLURM_HUB + UNUSED)
    log = str(info.value)
    assert (
        "c.CARTASlurmSpawner.req_runtime has no effect on CARTASlurmSpawner: use "
        "c.CARTASlurmSpawner.runtimes (the choices on the spawn form) instead"
    ) in log
    assert (
        "c.SlurmSpawner.state_pending_re has no effect on CARTASlurmSpawner: carta-hub "
        "reads every job's state from one squeue call"
    ) in log
    assert (
        "c.BatchSpawnerBase.req_partition has no effect on CARTASlurmSpawner: use "
        "c.CARTASlurmSpawner.partitions"
    ) in log


def test_batchspawner_script_template_stops_the_hub(hub_factory):
    """A batch_script written for batchspawner's SlurmSpawner ({{cmd}}, ...) was ignored;
    now that batch_script is the job template, it is refused before any student spawns."""
    config = SLURM_HUB + 'c.SlurmSpawner.batch_script = "#!/bin/bash\\n{{srun}} {{cmd}}\\n"\n'
    with pytest.raises(RuntimeError, match="JupyterHub exited") as info:
        hub_factory(config)
    assert (
        "c.CARTASlurmSpawner.batch_script reads cmd, which carta-hub's job script does not have"
    ) in str(info.value)


def test_hub_refuses_to_start_with_batchspawners_api_handler(hub_factory):
    with pytest.raises(RuntimeError, match="JupyterHub exited") as info:
        hub_factory(BATCHSPAWNER_HANDLER_FIRST + SLURM_HUB)
    assert (
        "/hub/api/batchspawner would be served by BatchSpawnerAPIHandler, not by "
        "carta-hub's PortOnlyHandler"
    ) in str(info.value)


@pytest.mark.fast
def test_every_unused_setting_is_inherited_and_configurable():
    from carta_hub.hub.slurm.spawner import UNUSED_SETTINGS, CARTASlurmSpawner

    traits = CARTASlurmSpawner.class_traits(config=True)
    assert set(UNUSED_SETTINGS) <= set(traits)


def spawner_with(settings):
    """A CARTASlurmSpawner made from ``settings``: (section, name, value) triples."""
    from traitlets.config import Config

    from carta_hub.hub.slurm.spawner import CARTASlurmSpawner

    config = Config()
    for section, name, value in settings:
        config[section][name] = value
    return CARTASlurmSpawner(config=config)


SCRIPT = "#!/bin/bash\n{{ command }}\n"


@pytest.mark.fast
@pytest.mark.parametrize(
    "settings,messages",
    [
        (
            [("SlurmSpawner", "req_nprocs", "4"), ("CARTASlurmSpawner", "req_qos", "normal")],
            [
                (
                    "c.SlurmSpawner.req_nprocs has no effect on CARTASlurmSpawner: use "
                    "c.CARTASlurmSpawner.cores (the choices on the spawn form) instead"
                ),
                (
                    "c.CARTASlurmSpawner.req_qos has no effect on CARTASlurmSpawner: use "
                    "c.CARTASlurmSpawner.qos (the choices on the spawn form) instead"
                ),
            ],
        ),
        (
            [("CARTASlurmSpawner", "req_options", "--constraint=carta")],
            ["use c.CARTASlurmSpawner.sbatch_options instead"],
        ),
        (
            [("CARTASlurmSpawner", "batch_query_cmd", "squeue -j {job_id}")],
            ["c.CARTASlurmSpawner.squeue_command"],
        ),
        (
            [
                ("CARTASlurmSpawner", "batch_script", SCRIPT),
                ("CARTASlurmSpawner", "job_template", "/etc/carta-hub/job.sh.j2"),
            ],
            ["c.CARTASlurmSpawner.batch_script and c.CARTASlurmSpawner.job_template are both set"],
        ),
        (
            [("CARTASlurmSpawner", "batch_script", "{% if res.gpus %}\n{{ command }}\n")],
            ["c.CARTASlurmSpawner.batch_script is no Jinja template: Unexpected end of template"],
        ),
        (
            [("CARTASlurmSpawner", "batch_script", "#SBATCH --mem={{ res.memory_gb }}G\n")],
            ["c.CARTASlurmSpawner.batch_script starts no server: it needs {{ command }}"],
        ),
    ],
)
def test_settings_that_would_do_nothing_are_refused(settings, messages):
    with pytest.raises(ValueError) as info:
        spawner_with(settings)
    for message in messages:
        assert message in str(info.value)


@pytest.mark.fast
def test_batchspawner_settings_that_apply_are_accepted():
    spawner = spawner_with(
        [
            ("CARTASlurmSpawner", "req_prologue", "module load apptainer"),
            ("SlurmSpawner", "req_srun", ""),
            ("BatchSpawnerBase", "exec_prefix", "sudo -u {username}"),
            ("CARTASlurmSpawner", "batch_script", SCRIPT),
        ]
    )
    assert (spawner.req_prologue, spawner.req_srun) == ("module load apptainer", "")
    assert (spawner.exec_prefix, spawner.batch_script) == ("sudo -u {username}", SCRIPT)
