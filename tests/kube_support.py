"""Shared pieces of the tests/test_kube_*.py tests: fake Hub users and spawner construction."""

import contextlib
import json
import os
import shutil
import tempfile

import kubernetes_asyncio.config.kube_config
from helpers.fakes import FakeUser  # noqa: F401
from k8s_simulator import start_simulator
from kubernetes_asyncio.client import ApiClient
from traitlets.config import Config

from carta_hub.hub.kube import CARTAKubeSpawner

UID, GID = 23999, 23998  # the simulated site's student
# the unix user whose server the Hub tests on the simulator start (kube_student, conftest.py)
KUBE_STUDENT, KUBE_STUDENT_UID = "carta-kube-stu", 23611

LDAP = {
    "user_attributes": {
        "uidNumber": [23501],
        "gidNumber": [23500],
        "uid": ["alice"],
        "homeDirectory": ["/ceph/home/alice"],
    }
}
OIDC = {
    "oauth_user": {
        "sub": "x",
        "uid_number": 23502,
        "gid_number": 23500,
        "gids": [23600, 23601],
        "preferred_username": "jo",
    }
}


def use_kubeconfig(monkeypatch, path):
    """Make kubernetes_asyncio (so KubeSpawner) load ``path`` (it reads $KUBECONFIG on import)."""
    monkeypatch.setattr(
        kubernetes_asyncio.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path)
    )


def make_spawner(user, config=None, user_options=None):
    """A CARTAKubeSpawner for ``user`` with a mock Hub, configured by ``config`` (dict of
    section -> {trait: value})."""
    c = Config()
    c.KubeSpawner.namespace = "carta"
    for section, values in (config or {}).items():
        for key, value in values.items():
            setattr(c[section], key, value)
    spawner = CARTAKubeSpawner(user=user, config=c, _mock=True)
    spawner.user_options = user_options or {}
    return spawner


async def pod_manifest(spawner):
    """The pod ``spawner`` would create, as the JSON the API server receives."""
    await spawner.load_user_options()
    pod = await spawner.get_pod_manifest()
    return json.loads(json.dumps(ApiClient().sanitize_for_serialization(pod)))


def container(pod, name="notebook"):
    return next(
        c
        for c in pod["spec"]["containers"] + pod["spec"].get("initContainers", [])
        if c["name"] == name
    )


def env(pod, name="notebook"):
    return {e["name"]: e.get("value") for e in container(pod, name)["env"]}


@contextlib.contextmanager
def simulated_site():
    """A simulator with a 'cephfs' PVC backed by a local tree with UID's home 'stu' and a
    read-only data folder (the fixture ``kube_site`` in conftest.py)."""
    root = tempfile.mkdtemp(prefix="carta-k8s-sim-", dir="/var/tmp")
    os.chmod(root, 0o755)
    state, volumes = os.path.join(root, "state"), os.path.join(root, "pv")
    home = os.path.join(volumes, "cephfs", "home", "stu")
    os.makedirs(state)
    os.makedirs(home)
    os.makedirs(os.path.join(volumes, "cephfs", "data", "survey"))
    os.chown(home, UID, GID)
    sim = start_simulator(state, volumes)
    sim.post(
        "/api/v1/namespaces/carta/persistentvolumeclaims",
        {
            "metadata": {"name": "cephfs"},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "resources": {"requests": {"storage": "1Gi"}},
                "storageClassName": "",
                "volumeName": "cephfs-static",
            },
        },
    )
    try:
        yield {"sim": sim, "root": root, "home": home}
    finally:
        sim.stop()
        shutil.rmtree(root, ignore_errors=True)
