"""End to end on the Kubernetes API simulator: a real JupyterHub + CHP with CARTAKubeSpawner;
a student's server starts as a pod with the student's identity and CephFS volumes, the
ICD 30 handshake succeeds through the proxy (carta-standin as backend) and stopping the
server deletes the pod."""

import importlib.util
import os
import struct

import pytest

from helpers.client import connect, open_carta
from helpers.ports import free_port
from helpers.users import ensure_user, remove_user
from kube_support import site  # noqa: F401
from k8s_simulator import write_kubeconfig

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the simulator's kubelet needs root"),
    pytest.mark.skipif(importlib.util.find_spec("carta_hub.standin") is None,
                       reason="carta-standin is not there yet"),
]

STUDENT, STUDENT_UID = "carta-kube-stu", 23611
REGISTER_VIEWER, REGISTER_VIEWER_ACK, FILE_LIST_REQUEST, FILE_LIST_RESPONSE = 1, 18, 2, 19


@pytest.fixture(scope="module")
def student(site):
    entry = ensure_user(STUDENT, uid=STUDENT_UID)
    home = os.path.join(site["root"], "pv", "cephfs", "home", STUDENT)
    os.makedirs(home, exist_ok=True)
    os.chown(home, entry.pw_uid, entry.pw_gid)
    yield entry
    remove_user(STUDENT)


@pytest.fixture(scope="module")
def kube_hub(site, student, hub_factory):
    ceph = site["root"] + "/ceph"
    mapping = os.path.join(site["root"], "ids.yaml")
    with open(mapping, "w") as f:
        f.write(f"{STUDENT}: {{uid: {student.pw_uid}, gid: {student.pw_gid}, "
                f"home: {ceph}/home/{STUDENT}}}\n")
    kubeconfig = write_kubeconfig(os.path.join(site["root"], "kubeconfig"), site["sim"].url)
    os.chmod(mapping, 0o644)
    os.chmod(kubeconfig, 0o644)
    return hub_factory(f"""
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
""", env={"KUBECONFIG": str(kubeconfig)})


def message(event_type, request_id, body):
    return struct.pack("<HHI", event_type, 30, request_id) + body


def fields(body):
    """Decode a protobuf message into {field number: [values]} (varint, fixed32/64, bytes)."""
    out, i = {}, 0
    while i < len(body):
        key, i = _varint(body, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(body, i)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, i = body[i:i + size], i + size
        else:
            size, i = _varint(body, i)
            value, i = body[i:i + size], i + size
        out.setdefault(number, []).append(value)
    return out


def _varint(data, i):
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


async def _reply(ws, event_type):
    while True:
        frame = await ws.recv()
        if isinstance(frame, bytes) and struct.unpack("<H", frame[:2])[0] == event_type:
            return fields(frame[8:])


async def test_student_session_on_kubernetes(kube_hub, site, student):
    hub, sim, ceph = kube_hub, site["sim"], site["root"] + "/ceph"
    hub.start_server(STUDENT)
    (pod,) = sim.pods()
    psc = pod["spec"]["securityContext"]
    assert (psc["runAsUser"], psc["runAsGroup"]) == (student.pw_uid, student.pw_gid)
    mounts = {m["mountPath"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert mounts[f"{ceph}/home/{STUDENT}"]["subPath"] == f"home/{STUDENT}"
    assert pod["spec"]["containers"][0]["args"][0] == "carta-hub-singleuser"

    session = hub.login(STUDENT)
    open_carta(hub, session, STUDENT)
    async with connect(hub, session, STUDENT) as ws:
        register = b"\x0d" + struct.pack("<I", 0) + b"\x1d" + struct.pack("<I", 5)
        await ws.send(message(REGISTER_VIEWER, 1, register))
        ack = await _reply(ws, REGISTER_VIEWER_ACK)
        assert ack[2] == [1], ack  # success
        data = f"{ceph}/data".encode()
        await ws.send(message(FILE_LIST_REQUEST, 2, b"\x0a" + bytes([len(data)]) + data))
        listing = await _reply(ws, FILE_LIST_RESPONSE)
        assert listing[1] == [1], listing
        assert [fields(d)[1][0] for d in listing[6]] == [b"survey"]

    hub.stop_server(STUDENT)
    assert sim.pods() == []
