"""End to end on the Kubernetes API simulator: a real JupyterHub + CHP with CARTAKubeSpawner;
a student's server starts as a pod with the student's identity and CephFS volumes, the
ICD 30 handshake succeeds through the proxy (carta-standin as backend) and stopping the
server deletes the pod."""

import os
from pathlib import Path

import pytest
from carta_standin.icd import EventType
from helpers.carta import file_list, register
from helpers.client import connect, open_carta
from kube_support import KUBE_STUDENT as STUDENT

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the simulator's kubelet needs root")


def backend_argvs(uid):
    """The command lines of the carta-standin processes running as ``uid``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_text().split("\0")[:-1]
            owner = os.stat(f"/proc/{pid}").st_uid
        except OSError:
            continue
        if owner == uid and any(a.endswith("/carta-standin") for a in argv[:2]):
            found.append(argv)
    return found


async def test_student_session_on_kubernetes(kube_hub, kube_site, kube_student):
    hub, sim, ceph = kube_hub, kube_site["sim"], kube_site["root"] + "/ceph"
    hub.start_server(STUDENT)
    (pod,) = sim.pods()
    psc = pod["spec"]["securityContext"]
    assert (psc["runAsUser"], psc["runAsGroup"]) == (kube_student.pw_uid, kube_student.pw_gid)
    mounts = {m["mountPath"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert mounts[f"{ceph}/home/{STUDENT}"]["subPath"] == f"home/{STUDENT}"
    assert pod["spec"]["containers"][0]["args"][0] == "carta-hub-singleuser"
    # the profile's CPUs (the default "small": limit 2) reach the server, and the backend
    # runs that many OpenMP threads, not one per CPU of the node
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert (env["CPU_LIMIT"], env["CPU_GUARANTEE"]) == ("2.0", "0.5")
    (argv,) = backend_argvs(kube_student.pw_uid)
    assert argv[argv.index("--omp_threads") + 1] == str(min(2, len(os.sched_getaffinity(0))))

    session = hub.login(STUDENT)
    open_carta(hub, session, STUDENT)
    async with connect(hub, session, STUDENT) as ws:
        event, _, _, ack = await register(ws)
        assert event == EventType.REGISTER_VIEWER_ACK and ack.success
        # the read-only data tree, listed by the backend running as the student
        event, _, _, listing = await file_list(ws, f"{ceph}/data")
    assert event == EventType.FILE_LIST_RESPONSE and listing.success, listing.message
    assert [d.name for d in listing.subdirectories] == ["survey"]

    hub.stop_server(STUDENT)
    assert sim.pods() == []
