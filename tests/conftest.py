import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers.faults import FaultSite
from helpers.hub import start_hub

# The Slurm cluster and its accounts: session fixtures defined once here, so that exactly one
# teardown stops the cluster, after every fixture that uses it.
from helpers.slurm import hub_account, slurm, students  # noqa: F401
from helpers.users import ensure_user, remove_user

HUB_USER = "cartahub-test"


@pytest.fixture(scope="session")
def hub_unix_user():
    """The unprivileged unix user the test Hubs (and their local servers) run as."""
    return ensure_user(HUB_USER)


@pytest.fixture(scope="session")
def artifacts():
    """Where tests leave screenshots and logs for people to look at."""
    path = Path(
        os.environ.get("CARTA_HUB_ARTIFACTS", Path(__file__).parent.parent / "test-artifacts")
    )
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def open_tmp(hub_unix_user):
    """A temporary folder outside /tmp/pytest-of-root (mode 700), owned by the test Hub's
    user and readable by other test users."""
    path = Path(tempfile.mkdtemp(prefix="carta-hub-", dir="/tmp"))
    os.chmod(path, 0o755)
    os.chown(path, hub_unix_user.pw_uid, hub_unix_user.pw_gid)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def hub_factory(hub_unix_user):
    """``hub_factory(config)``: a real Hub + CHP run as the unprivileged test user."""
    hubs, dirs = [], []

    def make(config="", **kwargs):
        workdir = Path(tempfile.mkdtemp(prefix="carta-hub-test-", dir="/tmp"))
        dirs.append(workdir)
        os.chown(workdir, hub_unix_user.pw_uid, hub_unix_user.pw_gid)
        config = config.replace("{workdir}", str(workdir))
        env = {k: v.replace("{workdir}", str(workdir)) for k, v in kwargs.pop("env", {}).items()}
        hub = start_hub(workdir, config, user=kwargs.pop("user", HUB_USER), env=env, **kwargs)
        hubs.append(hub)
        return hub

    yield make
    for hub in hubs:
        hub.stop()
    for d in dirs if not os.environ.get("KEEP_HUB_DIRS") else []:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def fault_site(slurm):  # noqa: F811
    """The Slurm fault site (tests/helpers/faults.py) that test_faults_slurm and
    test_attacks_slurm share: made once, removed before the cluster stops."""
    site = FaultSite(slurm)
    yield site
    site.close()


# Kubernetes: the API simulator (tests/k8s_simulator) and a Hub spawning pods on it


@pytest.fixture(scope="module")
def kube_site():
    """The simulator with a 'cephfs' claim (kube_support.simulated_site)."""
    from kube_support import simulated_site

    with simulated_site() as site:
        yield site


@pytest.fixture(scope="module")
def kube_student(kube_site):
    """A unix user with a home on the simulated CephFS tree."""
    from kube_support import KUBE_STUDENT, KUBE_STUDENT_UID

    entry = ensure_user(KUBE_STUDENT, uid=KUBE_STUDENT_UID)
    home = os.path.join(kube_site["root"], "pv", "cephfs", "home", KUBE_STUDENT)
    os.makedirs(home, exist_ok=True)
    os.chown(home, entry.pw_uid, entry.pw_gid)
    yield entry
    remove_user(KUBE_STUDENT)


@pytest.fixture(scope="module")
def kube_hub(kube_site, kube_student, hub_factory):
    """A real Hub + CHP whose CARTAKubeSpawner makes pods on the simulator."""
    from helpers.ports import free_port
    from k8s_simulator import write_kubeconfig
    from kube_support import KUBE_STUDENT

    ceph = kube_site["root"] + "/ceph"
    mapping = os.path.join(kube_site["root"], "ids.yaml")
    with open(mapping, "w") as f:
        f.write(
            f"{KUBE_STUDENT}: {{uid: {kube_student.pw_uid}, gid: {kube_student.pw_gid}, "
            f"home: {ceph}/home/{KUBE_STUDENT}}}\n"
        )
    kubeconfig = write_kubeconfig(
        os.path.join(kube_site["root"], "kubeconfig"), kube_site["sim"].url
    )
    os.chmod(mapping, 0o644)
    os.chmod(kubeconfig, 0o644)
    return hub_factory(
        f"""
c.JupyterHub.spawner_class = "carta-kube"
c.KubeSpawner.namespace = "carta"
c.KubeSpawner.ip = "127.0.0.1"
c.KubeSpawner.port = {free_port()}
c.KubeSpawner.delete_grace_period = 2
c.IdentityResolver.sources = ["mapping"]
c.IdentityResolver.mapping_file = "{mapping}"
c.CartaStorage.mounts = [
    {{"pvc": "cephfs", "sub_path": "home/{{login}}", "mount_path": "{ceph}/home/{{login}}"}},
    {{"pvc": "cephfs", "sub_path": "data", "mount_path": "{ceph}/data", "read_only": True}},
]
c.CartaBackend.top_level_folder = "{ceph}"
""",
        env={"KUBECONFIG": str(kubeconfig)},
    )
