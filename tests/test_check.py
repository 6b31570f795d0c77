"""``carta-hub check`` on the real Slurm test cluster, run like an operator would, as the Hub's
unprivileged user with docs/slurm.md's sudo rule (tests/helpers/slurm.py): the shipped
login-node config (slurm-pam.py, which loads culling.py) adapted to this cluster passes; deliberate
misconfigurations (missing image, missing bind source, no sudo rule, a user of UID 0, a culler
with admin scopes) each give their own message and a fix. Through slurmrestd (the test
cluster's, JWT), as a Hub user without sudo rule or SLURM_CONF: the key, slurmrestd, the API
version and the operator's token instead of sudo and squeue. On Kubernetes (the API
simulator): the volume claims."""

import asyncio
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from helpers.hub import VENV_BIN
from helpers.ports import free_port
from helpers.slurm import HUB_USER, SlurmRestd
from helpers.users import ensure_user, remove_user
from k8s_simulator import write_kubeconfig
from kube_support import use_kubeconfig

from carta_hub.hub import check

ROOT = Path(__file__).parent.parent
CONFIGS = ROOT / "jupyterhub_config"
NO_RULE_USER = "cartahub-norule"  # a Hub user without the sudo rule
STUDENT = "cs-alice"

# The shipped login-node config, pointed at this machine's cluster, folders and backend.
GOOD = """
load_subconfig("slurm-pam.py", path="{configs}")
c.JupyterHub.db_url = "sqlite:///{tmp}/jupyterhub.sqlite"
c.CARTASlurmSpawner.container_runtime = "none"
c.CARTASlurmSpawner.partitions = ["debug", "short"]
c.CartaStorage.mounts = [
    {{"host_path": "/home/{{login}}", "mount_path": "/home/{{login}}"}},
    {{"host_path": "{tmp}/data", "mount_path": "/ceph/data", "read_only": True}},
]
c.CartaBackend.executable = "{venv_bin}/carta-standin"
c.CartaBackend.frontend_folder = "{tmp}/frontend"
c.CartaBackend.top_level_folder = "/home"
"""
BROKEN = (
    GOOD
    + """
c.CARTASlurmSpawner.container_runtime = "apptainer"
c.CARTASlurmSpawner.container_image = "{tmp}/missing.sif"
c.CartaStorage.mounts.append({{"host_path": "{tmp}/missing-data", "mount_path": "/data"}})
c.JupyterHub.load_roles.append({{"name": "culler-admin", "services": ["idle-culler"],
                                "scopes": ["admin:users"]}})
"""
)


@pytest.fixture(scope="module")
def configs(slurm, hub_account):
    """Configs in a folder the Hub users can read, and a Hub user without the sudo rule."""
    tmp = Path(tempfile.mkdtemp(prefix="carta-check-", dir="/tmp"))
    tmp.chmod(0o755)
    (tmp / "data").mkdir()
    (tmp / "frontend").mkdir()
    (tmp / "frontend" / "index.html").write_text("<html></html>")
    ensure_user(NO_RULE_USER)
    values = {"configs": CONFIGS, "tmp": tmp, "venv_bin": VENV_BIN}
    for name, text in (("good.py", GOOD), ("broken.py", BROKEN)):
        (tmp / name).write_text(text.format(**values))
    yield tmp
    remove_user(NO_RULE_USER)
    shutil.rmtree(tmp, ignore_errors=True)


def run_check(slurm, configs, config, user, *names, slurm_conf=True):
    """``carta-hub check`` as the unix ``user``, with the Hub's environment (with
    ``slurm_conf``: Slurm's client configuration)."""
    cmd = [
        "setpriv",
        f"--reuid={user}",
        f"--regid={user}",
        "--init-groups",
        "--",
        str(VENV_BIN / "carta-hub"),
        "check",
        "-f",
        str(configs / config),
        *names,
    ]
    env = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}
    if slurm_conf:
        env["SLURM_CONF"] = str(slurm.conf)
    result = subprocess.run(
        cmd, check=False, cwd=configs, env=env, capture_output=True, text=True, timeout=90
    )
    return result.returncode, result.stdout + result.stderr


def test_working_setup_passes(slurm, configs):
    code, out = run_check(slurm, configs, "good.py", HUB_USER, STUDENT)
    assert code == 0, out
    uid = pwd.getpwnam(STUDENT).pw_uid
    for line in (
        f"{STUDENT} runs as UID {uid}",
        f"sudo -E -u {STUDENT} may run sbatch",
        "squeue answers",
        "idle culler 'idle-culler' with scopes",
        "CARTA backend: ",
        f"bind source of /ceph/data: {configs}/data",
        "0 problem(s), 0 warning(s)",
    ):
        assert line in out, out


def test_misconfigurations_named_with_fixes(slurm, configs):
    code, out = run_check(slurm, configs, "broken.py", NO_RULE_USER, STUDENT, "root")
    assert code == 1, out
    expected = [
        f"container image: {configs}/missing.sif does not exist",
        "correct c.CARTASlurmSpawner.container_image",
        f"bind source of /data: {configs}/missing-data does not exist",
        f"{NO_RULE_USER} cannot run sbatch, scancel, tail as {STUDENT} through sudo",
        f"{NO_RULE_USER} ALL=(%carta-users) NOPASSWD:SETENV: CARTA_SLURM",
        "User 'root' maps to UID 0",
        "idle culler 'idle-culler' has admin rights (admin:users)",
    ]
    for text in expected:
        assert text in out, f"{text!r} not in:\n{out}"
    assert "4 problem(s), 1 warning(s)" in out, out


# The same login-node config through slurmrestd (jupyterhub_config/slurm-rest.py)
REST = (
    GOOD
    + """
load_subconfig("slurm-rest.py", path="{configs}")
c.CARTASlurmSpawner.slurmrestd_url = "{url}"
c.CARTASlurmSpawner.jwt_key_file = "{key}"
"""
)


@pytest.fixture(scope="module")
def restd(slurm):
    server = SlurmRestd(slurm).start()
    yield server
    server.stop()


def rest_config(configs, name, url, key, extra=""):
    """A config through slurmrestd at ``url`` with the key ``key``, as ``name``."""
    values = {"configs": CONFIGS, "tmp": configs, "venv_bin": VENV_BIN, "url": url, "key": key}
    (configs / name).write_text(REST.format(**values) + extra)
    return name


def key_of(user, path, data):
    """A JWT key file readable only by ``user``, holding ``data``."""
    path.write_bytes(data)
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    path.chmod(0o600)
    return path


def test_slurmrestd_setup_passes_without_sudo(slurm, configs, restd):
    """A Hub user without the sudo rule and without Slurm's client configuration: the REST
    path needs neither, and check asks for neither."""
    key = restd.key_for(NO_RULE_USER, configs)
    config = rest_config(configs, "rest.py", restd.url, key)
    code, out = run_check(slurm, configs, config, NO_RULE_USER, STUDENT, slurm_conf=False)
    assert code == 0, out
    for line in (
        f"Slurm JWT key readable: {key}",
        f"slurmrestd at {restd.url} answers; carta-hub uses its API v0.0.38",
        "Slurm accepts the Hub's token for slurm (c.CARTASlurmSpawner.slurm_operator)",
        f"{STUDENT} runs as UID {pwd.getpwnam(STUDENT).pw_uid}",
        "0 problem(s), 0 warning(s)",
    ):
        assert line in out, out
    for word in ("sudo", "squeue", "sbatch", "munge"):
        assert word not in out, out
    # the Hub may run off the cluster (Kubernetes): a path missing here is a warning
    image = 'c.CARTASlurmSpawner.container_runtime = "apptainer"\n'
    image += f'c.CARTASlurmSpawner.container_image = "{configs}/missing.sif"\n'
    config = rest_config(configs, "rest-image.py", restd.url, key, image)
    code, out = run_check(slurm, configs, config, NO_RULE_USER, STUDENT, slurm_conf=False)
    assert code == 0, out
    assert f"[WARNING] container image: {configs}/missing.sif does not exist on this host " in out
    assert "through slurmrestd the Hub may run off the cluster" in out
    assert "0 problem(s), 1 warning(s)" in out, out


def test_slurmrestd_problems_named(slurm, configs, restd):
    """A wrong key, a key the Hub cannot read, slurmrestd unreachable, a partition Slurm
    lacks: each SlurmRest's (or the partitions') message, and nothing about sudo."""
    wrong = key_of(NO_RULE_USER, configs / "wrong.key", os.urandom(32))
    unreadable = key_of(HUB_USER, configs / "hubs.key", slurm.jwt_key.read_bytes())
    good = restd.key_for(NO_RULE_USER, configs)
    nowhere = f"http://127.0.0.1:{free_port()}"
    cases = [
        (
            rest_config(configs, "rest-wrong-key.py", restd.url, wrong),
            f"c.CARTASlurmSpawner.jwt_key_file ({wrong}) is not the key of the cluster's",
        ),
        (
            rest_config(configs, "rest-unreadable.py", restd.url, unreadable),
            f"The Hub cannot read the Slurm JWT key c.CARTASlurmSpawner.jwt_key_file="
            f"'{unreadable}' (Permission denied)",
        ),
        (
            rest_config(configs, "rest-unreachable.py", nowhere, good),
            f"slurmrestd at {nowhere} is unreachable",
        ),
        (
            rest_config(
                configs,
                "rest-partition.py",
                restd.url,
                good,
                'c.CARTASlurmSpawner.partitions = ["debug", "nonexistent"]\n',
            ),
            "partitions nonexistent offered to students do not exist (the cluster has debug,",
        ),
    ]
    for config, message in cases:
        code, out = run_check(slurm, configs, config, NO_RULE_USER, STUDENT, slurm_conf=False)
        assert code == 1, out
        assert message in out, f"{message!r} not in:\n{out}"
        assert "1 problem(s), 0 warning(s)" in out, out
        assert "sudo" not in out, out


@pytest.mark.fast
def test_proxy_versions():
    assert check.proxy_findings("4.6.0")[0].level == "ok"
    old = [f.text for f in check.proxy_findings("4.1.0")]
    assert any("CVE-2024-28179" in t for t in old) and any("CVE-2024-35225" in t for t in old)
    needs = "which carta-hub needs (its standalone mode, a callable update_last_activity)"
    assert [f.text for f in check.proxy_findings("4.2.0")] == [
        f"jupyter-server-proxy 4.2.0 is older than 4.6, {needs}"
    ]
    assert [f.text for f in check.proxy_findings("4.5.0")] == [
        f"jupyter-server-proxy 4.5.0 is older than 4.6, {needs}"
    ]


class Roles:
    def __init__(self, scopes, service=None):
        self.services = [
            service or {"name": "cull", "command": ["python3", "-m", "jupyterhub_idle_culler"]}
        ]
        self.load_roles = [{"name": "cull", "services": ["cull"], "scopes": scopes}]


@pytest.mark.fast
def test_culler_scopes():
    found = check.culler_findings(Roles(["list:users", "read:servers"]))
    assert found[0].level == "problem"
    assert "lacks the scopes delete:servers, read:users:activity" in found[0].text
    assert check.culler_findings(Roles(sorted(check.CULLER_SCOPES)))[0].level == "ok"
    legacy = {"name": "cull", "admin": True, "command": ["jupyterhub-idle-culler"]}
    assert "the admin role" in check.culler_findings(Roles([], legacy))[0].text
    none = check.culler_findings(Roles([], {"name": "other", "command": ["x"]}))
    assert none[0].level == "warning" and "no idle culler" in none[0].text


@pytest.mark.fast
def test_identity_from_stored_auth_state(tmp_path, monkeypatch):
    """An LDAP site: the identity comes from the encrypted auth_state in the Hub database."""
    from jupyterhub import crypto, orm

    monkeypatch.setenv("JUPYTERHUB_CRYPT_KEY", "ab" * 32)
    crypto.CryptKeeper.clear_instance()
    db_url = f"sqlite:///{tmp_path}/jupyterhub.sqlite"
    state = {
        "user_attributes": {
            "uidNumber": ["23501"],
            "gidNumber": ["23500"],
            "uid": ["alice"],
            "homeDirectory": ["/ceph/home/alice"],
        }
    }

    async def encrypted():
        return await crypto.encrypt(state)

    db = orm.new_session_factory(db_url)()
    db.add(orm.User(name="alice", encrypted_auth_state=asyncio.run(encrypted())))
    db.add(orm.User(name="bob"))
    db.commit()
    config = tmp_path / "hub.py"
    config.write_text(
        f'c.JupyterHub.spawner_class = "carta-kube"\n'
        f'c.JupyterHub.db_url = "{db_url}"\n'
        'c.IdentityResolver.sources = ["auth_state"]\n'
    )
    sections = asyncio.run(check.run_checks(str(config), ["alice", "bob"]))
    alice, bob = sections["user alice"], sections["user bob"]
    assert [f.level for f in alice] == ["ok"]
    assert "UID 23501, GID 23500, groups [], login alice, home /ceph/home/alice" in alice[0].text
    assert bob[0].level == "problem" and "No POSIX identity for user 'bob'" in bob[0].text
    assert "log in once" in bob[0].fix
    crypto.CryptKeeper.clear_instance()


async def test_kubernetes_claims(kube_site, tmp_path, monkeypatch):
    """On Kubernetes: the volume claims of c.CartaStorage.mounts, on the API simulator."""
    use_kubeconfig(monkeypatch, write_kubeconfig(tmp_path / "kc", kube_site["sim"].url))
    mapping = tmp_path / "ids.yaml"
    mapping.write_text("stu: {uid: 23999, gid: 23998, home: /ceph/home/stu}\n")
    config = tmp_path / "hub.py"
    config.write_text(f"""
c.JupyterHub.spawner_class = "carta-kube"
c.KubeSpawner.namespace = "carta"
c.KubeSpawner.k8s_api_host = "{kube_site["sim"].url}"
c.IdentityResolver.sources = ["mapping"]
c.IdentityResolver.mapping_file = "{mapping}"
c.CartaStorage.mounts = [
    {{"pvc": "cephfs", "sub_path": "home/{{login}}", "mount_path": "/ceph/home/{{login}}"}},
    {{"pvc": "scratch", "mount_path": "/scratch"}},
]
""")
    found = (await check.run_checks(str(config), ["stu"]))["user stu"]
    texts = {f.text: f.level for f in found}
    assert texts["PersistentVolumeClaim cephfs in namespace carta is Bound"] == "ok"
    assert texts["PersistentVolumeClaim scratch in namespace carta does not exist"] == "problem"


@pytest.mark.fast
@pytest.mark.parametrize("installed", [False, True])
def test_default_frontend_beside_the_backend(tmp_path, installed):
    """Without c.CartaBackend.frontend_folder carta_backend serves the frontend from
    <its resolved path>/../share/carta/frontend (src/Main/Main.cc): the check looks there,
    through a symlinked executable as the backend resolves /proc/self/exe."""
    prefix = tmp_path / "opt" / "carta"
    (prefix / "bin").mkdir(parents=True)
    exe = prefix / "bin" / "carta_backend"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "carta_backend").symlink_to(exe)
    frontend = prefix / "bin" / "../share/carta/frontend"
    if installed:
        frontend.mkdir(parents=True)
        (frontend / "index.html").write_text("<html></html>")
    backend = check.CartaBackend(executable=str(tmp_path / "bin" / "carta_backend"))
    found = check.backend_findings(backend)
    assert [f.level for f in found] == ["ok", "ok" if installed else "problem"]
    assert str(frontend) in found[1].text
    if not installed:
        assert "holds no readable index.html" in found[1].text
        assert "c.CartaBackend.frontend_folder" in found[1].fix
