"""carta_hub.hub.storage: templates, escaping, Kubernetes volumes and Apptainer binds."""

import pytest

from carta_hub.hub.identity import Identity
from carta_hub.hub.storage import CartaStorage, binds, kube_volumes
from carta_hub.usercontext import escape_component

pytestmark = pytest.mark.fast

IDENT = Identity(name="alice", uid=5001, gid=5000)
MOUNTS = [
    {"pvc": "cephfs", "sub_path": "home/{login}", "mount_path": "/ceph/home/{login}"},
    {"pvc": "cephfs", "sub_path": "scratch/{username}", "mount_path": "/scratch/{uid}"},
    {"host_path": "/ceph/data", "mount_path": "/ceph/data", "read_only": True},
    {"host_path": "/mnt/ceph/proj", "mount_path": "/proj", "hpc_path": "/cephfs/proj"},
]


def test_kube_volumes_share_one_pvc():
    mounts = CartaStorage(mounts=MOUNTS).render(IDENT.context("a.b@x"))
    volumes, vms = kube_volumes(mounts)
    assert volumes == [
        {"name": "carta-storage-0", "persistentVolumeClaim": {"claimName": "cephfs"}},
        {"name": "carta-storage-1", "hostPath": {"path": "/ceph/data", "type": "Directory"}},
        {"name": "carta-storage-2", "hostPath": {"path": "/mnt/ceph/proj", "type": "Directory"}},
    ]
    assert vms[0] == {
        "name": "carta-storage-0",
        "mountPath": "/ceph/home/alice",
        "readOnly": False,
        "subPath": "home/alice",
    }
    assert vms[1]["subPath"] == "scratch/a.b@x" and vms[1]["mountPath"] == "/scratch/5001"
    assert vms[2]["readOnly"] is True


def test_binds_use_hpc_paths():
    mounts = CartaStorage(mounts=MOUNTS).render(IDENT.context("alice"))
    assert binds(mounts) == [
        {"source": "/ceph/home/alice", "target": "/ceph/home/alice", "read_only": False},
        {"source": "/scratch/5001", "target": "/scratch/5001", "read_only": False},
        {"source": "/ceph/data", "target": "/ceph/data", "read_only": True},
        {"source": "/cephfs/proj", "target": "/proj", "read_only": False},
    ]


@pytest.mark.parametrize(
    "name, escaped",
    [
        ("alice", "alice"),
        ("jo@uni.edu", "jo@uni.edu"),
        ("..", "%2E%2E"),
        ("a/../b", "a%2F..%2Fb"),
        ("zoë", "zo%C3%AB"),
        ("{x}", "%7Bx%7D"),
    ],
)
def test_escape_component(name, escaped):
    assert escape_component(name) == escaped


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"mount_path": "/c", "cephfs": {"monitors": []}}, "in-tree cephfs"),
        ({"mount_path": "/c"}, "exactly one of pvc, host_path"),
        ({"pvc": "c", "host_path": "/c", "mount_path": "/c"}, "exactly one"),
        ({"host_path": "/c", "sub_path": "x", "mount_path": "/c"}, "sub_path needs pvc"),
        ({"pvc": "c", "mount_path": "/c/{slug}"}, "unknown template field"),
        ({"pvc": "c", "sub_path": "../etc", "mount_path": "/c"}, "relative without"),
        ({"host_path": "c", "mount_path": "/c"}, "absolute"),
    ],
)
def test_bad_config(entry, message):
    with pytest.raises(Exception, match=message):
        CartaStorage(mounts=[entry])
