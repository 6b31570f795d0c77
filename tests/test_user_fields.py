"""The user fields of templates (carta_hub.usercontext, docs/identity-storage.md): every
template setting takes every field, through the code the spawners, the user's server and
``carta-hub check`` run, with ``{username}`` escaped in all of them; a field that does not
exist is refused naming the setting and the fields, at Hub start and by ``carta-hub check``."""

import json
import os
import subprocess

import pytest
import yaml
from helpers.fakes import FakeUser
from helpers.hub import SAME_USER_CARTA
from k8s_simulator import write_kubeconfig
from kube_support import container, env, make_spawner, pod_manifest, use_kubeconfig
from traitlets.config import Config

from carta_hub.backend import (
    SERVER_CONFIG_ENV,
    CartaBackend,
    server_config,
    server_environment,
)
from carta_hub.hub import check
from carta_hub.hub.identity import IdentityResolver
from carta_hub.hub.kube import CARTAKubeSpawner
from carta_hub.hub.slurm.spawner import CARTASlurmSpawner
from carta_hub.hub.storage import TEMPLATE_KEYS, CartaStorage
from carta_hub.usercontext import FIELDS, TemplateError, UserContext

CLASSES = (CartaBackend, CartaStorage, IdentityResolver, CARTASlurmSpawner, CARTAKubeSpawner)
SETTINGS = {
    "CartaBackend.top_level_folder",
    "CartaBackend.starting_folder",
    "CartaStorage.mounts",
    "IdentityResolver.home_template",
    "CARTASlurmSpawner.job_name",
    "CARTASlurmSpawner.log_path",
    "CARTASlurmSpawner.folder_roots",
}
# every field, {home} last (it starts with /); "jo smith" needs escaping, its login does not
TEMPLATE = "/t/" + "-".join(f"{{{f}}}" for f in FIELDS if f != "home") + "{home}"
USER = UserContext("jo smith", "jsmith", 23501, 23500, "/ceph/home/jsmith")
FILLED = "/t/jo%20smith-jsmith-23501-23500/ceph/home/jsmith"
LISTED = "{username}, {login}, {uid}, {gid}, {home}"


def template_settings():
    return {
        f"{cls.__name__}.{name}"
        for cls in CLASSES
        for name in cls.class_trait_names(user_template=True)
    }


@pytest.mark.fast
def test_the_template_settings_are_these():
    """A new template setting is added to the tests below (and to the docs' list)."""
    assert set(FIELDS) == {"username", "login", "uid", "gid", "home"}
    assert template_settings() == SETTINGS


@pytest.fixture
def mapping(tmp_path):
    path = tmp_path / "ids.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                USER.username: {
                    "uid": USER.uid,
                    "gid": USER.gid,
                    "name": USER.login,
                    "home": USER.home,
                }
            }
        )
    )
    return path


def slurm_spawner(mapping, **traits):
    c = Config()
    c.IdentityResolver.sources = ["mapping"]
    c.IdentityResolver.mapping_file = str(mapping)
    c.CARTASlurmSpawner.container_image = "/images/carta.sif"
    c.CartaStorage.mounts = [{"host_path": TEMPLATE, "hpc_path": TEMPLATE, "mount_path": TEMPLATE}]
    for key, value in traits.items():
        setattr(c.CARTASlurmSpawner, key, value)
    return CARTASlurmSpawner(user=FakeUser(USER.username), config=c)


@pytest.mark.fast
async def test_slurm_job_script_fills_every_field(mapping):
    spawner = slurm_spawner(
        mapping, job_name=TEMPLATE, log_path=TEMPLATE + "/%j.log", folder_roots=[TEMPLATE]
    )
    names = await spawner._names()
    assert spawner.carta_user == USER
    spawner._job_names, spawner._job = names, spawner.validate_resources({}, names)
    script = await spawner._get_batch_script(keepvars="PATH")
    lines = script.splitlines()
    assert f"#SBATCH --job-name={FILLED}" in lines
    assert f'log={FILLED}/"${{SLURM_JOB_ID}}".log' in lines  # the escape's % is no Slurm code
    assert f"--bind {FILLED}:{FILLED}" in script
    assert [f.roots for f in spawner.resource_fields(names) if f.name == "folder"] == [(FILLED,)]
    spawner.job_id = "42"
    assert spawner._log_file() == f"{FILLED}/42.log"


@pytest.mark.fast
async def test_kubernetes_pod_fills_every_field(tmp_path, monkeypatch):
    use_kubeconfig(monkeypatch, write_kubeconfig(tmp_path / "kc", "http://127.0.0.1:9"))
    path = tmp_path / "ids.yaml"
    path.write_text(
        yaml.safe_dump({USER.username: {"uid": USER.uid, "gid": USER.gid, "name": USER.login}})
    )
    spawner = make_spawner(
        FakeUser(USER.username),
        {
            "IdentityResolver": {
                "sources": ["mapping"],
                "mapping_file": str(path),
                "home_template": "/ceph/home/{login}",
            },
            "CartaStorage": {
                "mounts": [{"pvc": "cephfs", "sub_path": TEMPLATE[1:], "mount_path": TEMPLATE}]
            },
            "CartaBackend": {"top_level_folder": TEMPLATE},
        },
    )
    pod = await pod_manifest(spawner)
    mount = next(m for m in container(pod)["volumeMounts"] if m["mountPath"] == FILLED)
    assert mount["subPath"] == FILLED[1:]
    passed = json.loads(env(pod)[SERVER_CONFIG_ENV])
    assert passed["user"] == {
        "username": USER.username,
        "login": USER.login,
        "uid": USER.uid,
        "gid": USER.gid,
        "home": USER.home,
    }
    assert passed["config"]["CartaBackend"]["top_level_folder"] == TEMPLATE


@pytest.mark.fast
def test_storage_fills_every_field_in_every_path():
    mounts = CartaStorage(
        mounts=[
            {"pvc": "c", "sub_path": TEMPLATE[1:], "mount_path": TEMPLATE},
            {"host_path": TEMPLATE, "hpc_path": TEMPLATE, "mount_path": TEMPLATE},
        ]
    ).render(USER)
    assert {getattr(m, key) for m in mounts for key in TEMPLATE_KEYS} - {""} == {FILLED, FILLED[1:]}


@pytest.mark.fast
@pytest.mark.parametrize("setting", ["top_level_folder", "starting_folder"])
def test_users_server_fills_every_field_in_backend_folders(setting, monkeypatch):
    """As the spawners pass it: the template and the user in $CARTA_HUB_SERVER_CONFIG, the
    server fills it in the backend's command line."""
    config = {"CartaBackend": {"executable": "true", setting: TEMPLATE}}
    monkeypatch.setenv(SERVER_CONFIG_ENV, server_environment(config, USER)[SERVER_CONFIG_ENV])
    argv = CartaBackend(config=server_config(os.environ)).command(8000)
    if setting == "top_level_folder":
        assert argv[argv.index("--top_level_folder") + 1] == FILLED
    assert argv[-1] == FILLED


@pytest.mark.fast
async def test_home_template_fills_every_field_but_home():
    """The template that makes {home} cannot use it."""
    template = TEMPLATE.replace("{home}", "")
    resolver = IdentityResolver(sources=["auth_state"], home_template=template)
    state = {
        "user_attributes": {"uidNumber": [USER.uid], "gidNumber": [USER.gid], "uid": [USER.login]}
    }
    ident = await resolver.resolve(FakeUser("jo.smith", state))  # a home holds no %
    assert ident.home == "/t/jo.smith-jsmith-23501-23500"
    with pytest.raises(TemplateError, match="c.IdentityResolver.home_template"):
        IdentityResolver(home_template="/h/{home}")


BAD = {
    "CartaBackend.top_level_folder": lambda: CartaBackend(top_level_folder="/d/{user}"),
    "CartaBackend.starting_folder": lambda: CartaBackend(starting_folder="{HOME}/x"),
    "CartaStorage.mounts": lambda: CartaStorage(
        mounts=[{"host_path": "/d/{user}", "mount_path": "/d"}]
    ),
    "IdentityResolver.home_template": lambda: IdentityResolver(home_template="/h/{name}"),
    "CARTASlurmSpawner.job_name": lambda: CARTASlurmSpawner(job_name="carta-{user}"),
    "CARTASlurmSpawner.log_path": lambda: CARTASlurmSpawner(log_path="/l/{user}/%j.log"),
    "CARTASlurmSpawner.folder_roots": lambda: CARTASlurmSpawner(folder_roots=["/h/{user}"]),
}


@pytest.mark.fast
@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_unknown_field_names_the_setting_and_the_fields(setting):
    with pytest.raises(TemplateError) as refused:
        BAD[setting]()
    message = str(refused.value)
    assert f"c.{setting}" in message and "unknown template field" in message
    assert LISTED.replace("{home}", "").rstrip(", ") in message


def test_hub_refuses_to_start_with_an_unknown_field(hub_factory):
    """Before any spawn (a real Hub, as the local demo's: no spawner is made at start)."""
    with pytest.raises(RuntimeError, match="JupyterHub exited") as info:
        hub_factory(SAME_USER_CARTA + 'c.CartaBackend.top_level_folder = "/data/{user}"\n')
    assert (
        "c.CartaBackend.top_level_folder = '/data/{user}': {user} is an unknown template field"
    ) in str(info.value)


HUB_CONFIG = """
c.JupyterHub.spawner_class = "carta-slurm"
c.JupyterHub.db_url = "sqlite:///{tmp}/jupyterhub.sqlite"
c.IdentityResolver.sources = ["mapping"]
c.IdentityResolver.mapping_file = "{tmp}/ids.yaml"
c.CARTASlurmSpawner.container_runtime = "none"
c.CARTASlurmSpawner.log_path = "{tmp}/logs-{{uid}}-{{username}}/%j.log"
c.CartaStorage.mounts = [{{"host_path": "{tmp}/data-{{login}}", "mount_path": "/data"}}]
c.CartaBackend.executable = "true"
c.CartaBackend.top_level_folder = "{tmp}/top-{{gid}}"
"""


@pytest.fixture
def check_config(tmp_path, monkeypatch):
    """A Slurm Hub's configuration whose templates use {uid}, {gid}, {login}, {username};
    no cluster (the sudo and squeue checks only fail)."""
    monkeypatch.setattr(check, "_run", lambda argv: subprocess.CompletedProcess(argv, 1, "", ""))
    (tmp_path / "ids.yaml").write_text(
        yaml.safe_dump(
            {
                USER.username: {
                    "uid": USER.uid,
                    "gid": USER.gid,
                    "name": USER.login,
                    "home": str(tmp_path),
                }
            }
        )
    )
    for folder in ("logs-23501-jo%20smith", "data-jsmith", "top-23500"):
        (tmp_path / folder).mkdir()
    path = tmp_path / "hub.py"
    path.write_text(HUB_CONFIG.format(tmp=tmp_path))
    return path


@pytest.mark.fast
async def test_check_fills_the_fields_the_spawner_fills(check_config):
    """`carta-hub check` failed with KeyError: 'uid' for a log_path the spawner accepted."""
    sections = await check.run_checks(str(check_config), [USER.username])
    found = {f.text: f.level for f in sections[f"user {USER.username}"]}
    tmp = check_config.parent
    assert found[f"folder of the job's log: {tmp}/logs-23501-jo%20smith"] == "ok"
    assert found[f"bind source of /data: {tmp}/data-jsmith"] == "ok"
    assert found[f"CARTA top level folder: {tmp}/top-23500"] == "ok"


@pytest.mark.fast
async def test_check_reports_an_unknown_field(check_config):
    check_config.write_text(
        check_config.read_text() + 'c.CartaStorage.mounts = [{"host_path": "/d/{user}", '
        '"mount_path": "/d"}]\n'
    )
    sections = await check.run_checks(str(check_config), [USER.username])
    (hub,) = [found for section, found in sections.items() if section.startswith("Hub")]
    problems = [f.text for f in hub if f.level == "problem"]
    assert problems == [
        (
            "c.CartaStorage.mounts host_path = '/d/{user}': {user} is an unknown "
            f"template field. The user fields are {LISTED} "
            "(docs/identity-storage.md, Template fields); write {{ or }} for a "
            "literal brace."
        )
    ]
    assert list(sections) == [next(iter(sections))]  # no user section: every spawn would fail
