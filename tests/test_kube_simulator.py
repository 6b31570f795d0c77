"""CARTAKubeSpawner's real start/poll/stop against the Kubernetes API simulator: the pod runs
as the user's UID/GID/groups with the user's storage mounted and can resolve its own names
(nss_wrapper); a bad identity creates no pod."""

import json
import os

import pytest
from helpers.ports import free_port, wait_for
from k8s_simulator import write_kubeconfig
from kube_support import GID, UID, FakeUser, make_spawner, use_kubeconfig

from carta_hub.hub.identity import IdentityError
from carta_hub.hub.kube import CARTAKubeSpawner

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the simulator's kubelet needs root")

NSS_WRAPPER = "/usr/lib/x86_64-linux-gnu/libnss_wrapper.so"
GROUP = 23997  # UID, GID and GROUP have no passwd/group entries on this machine
# What the "notebook" container runs: report who it is, then wait to be stopped.
PROBE = """
import grp, json, os, pwd, time
info = {"uid": os.getuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()),
        "cwd": os.getcwd(), "home": os.environ["HOME"], "name": pwd.getpwuid(os.getuid()).pw_name,
        "group": grp.getgrgid(os.getgid()).gr_name, "data": os.listdir("DATA")}
try:
    open("DATA/x", "w")
except OSError as e:
    info["data_write"] = e.strerror
json.dump(info, open("who.json", "w"))
time.sleep(600)
"""


@pytest.fixture
def spawner_for(kube_site, tmp_path, monkeypatch):
    use_kubeconfig(monkeypatch, write_kubeconfig(tmp_path / "kubeconfig", kube_site["sim"].url))
    mapping = tmp_path / "ids.yaml"
    mapping.write_text(
        f"stu: {{uid: {UID}, gid: {GID}, groups: [{GROUP}], name: stu}}\n"
        "root2: {uid: 0, gid: 0}\n"
    )
    ceph = kube_site["root"] + "/ceph"

    def make(name, **kube):
        return make_spawner(
            FakeUser(name),
            {
                "KubeSpawner": {
                    "k8s_api_host": kube_site["sim"].url,
                    "port": free_port(),
                    "start_timeout": 30,
                    "delete_grace_period": 2,
                    **kube,
                },
                "IdentityResolver": {
                    "sources": ["mapping"],
                    "mapping_file": str(mapping),
                    "home_template": ceph + "/home/{login}",
                },
                "CartaStorage": {
                    "mounts": [
                        {
                            "pvc": "cephfs",
                            "sub_path": "home/{login}",
                            "mount_path": ceph + "/home/{login}",
                        },
                        {
                            "pvc": "cephfs",
                            "sub_path": "data",
                            "mount_path": ceph + "/data",
                            "read_only": True,
                        },
                    ]
                },
            },
        )

    return make


async def _stop_reflectors():
    """KubeSpawner's reflectors are class-wide singletons bound to one test's event loop."""
    await CARTAKubeSpawner._stop_all_reflectors()


@pytest.mark.skipif(not os.path.exists(NSS_WRAPPER), reason="libnss-wrapper is not installed")
async def test_start_poll_stop(kube_site, spawner_for):
    sim, ceph = kube_site["sim"], kube_site["root"] + "/ceph"
    spawner = spawner_for("stu", cmd=["python3", "-c", PROBE.replace("DATA", ceph + "/data")])
    try:
        url = await spawner.start()
        assert url.startswith("http://127.0.0.1:")
        assert await spawner.poll() is None
        who_file = os.path.join(kube_site["home"], "who.json")
        wait_for(lambda: os.path.exists(who_file) and os.path.getsize(who_file), 20, "the probe")
        with open(who_file) as f:
            who = json.load(f)
        assert (who["uid"], who["gid"], who["groups"]) == (UID, GID, sorted([GID, GROUP]))
        assert who["cwd"] == who["home"] == ceph + "/home/stu"
        assert (who["name"], who["group"]) == ("stu", f"g{GID}")  # through nss_wrapper
        assert who["data"] == ["survey"] and who["data_write"] == "Read-only file system"
        (pod,) = sim.pods()
        assert pod["spec"]["securityContext"]["runAsUser"] == UID

        await spawner.stop()
        assert sim.pods() == [] and await spawner.poll() == 1
        assert any(e["reason"] == "Killing" for e in sim.events())
    finally:
        await _stop_reflectors()


@pytest.mark.parametrize(
    "name, message", [("root2", "UID 0"), ("nobody-here", "No POSIX identity")]
)
async def test_bad_identity_creates_no_pod(kube_site, spawner_for, name, message):
    spawner = spawner_for(name, cmd=["true"])
    try:
        with pytest.raises(IdentityError, match=message):
            await spawner.start()
        assert kube_site["sim"].pods() == []
    finally:
        await _stop_reflectors()


# What the "notebook" container runs when the operator adds a volume, an init container and a
# group: report what it sees of them, then wait to be stopped.
SITE_PROBE = """
import json, os, time
info = {"groups": sorted(os.getgroups()), "site": os.listdir("SITE"),
        "flag": open("SCRATCH/flag").read()}
try:
    open("SITE/x", "w")
except OSError as e:
    info["site_write"] = e.strerror
json.dump(info, open("site.json", "w"))
time.sleep(600)
"""


def _read_json(path):
    with open(path) as f:
        return json.load(f)


async def test_operator_volume_init_container_and_group(kube_site, spawner_for):
    """An operator's own volumes, init container and supplemental group reach the running
    pod beside carta-hub's identity and storage."""
    root, ceph = kube_site["root"], kube_site["root"] + "/ceph"
    os.makedirs(f"{root}/site-software/bin")
    site, scratch = ceph + "/site", root + "/scratch"
    probe = SITE_PROBE.replace("SITE", site).replace("SCRATCH", scratch)
    spawner = spawner_for(
        "stu",
        cmd=["python3", "-c", probe],
        supplemental_gids=[GROUP - 1],
        volumes=[
            {
                "name": "site-software",
                "hostPath": {"path": f"{root}/site-software", "type": "Directory"},
            },
            {"name": "site-scratch", "emptyDir": {}},
        ],
        volume_mounts=[
            {"name": "site-software", "mountPath": site, "readOnly": True},
            {"name": "site-scratch", "mountPath": scratch},
        ],
        init_containers=[
            {
                "name": "site-init",
                "image": "busybox",
                "command": ["/bin/sh", "-c", f"echo ready > {scratch}/flag"],
                "volumeMounts": [{"name": "site-scratch", "mountPath": scratch}],
            }
        ],
    )
    try:
        await spawner.start()
        found = os.path.join(kube_site["home"], "site.json")
        wait_for(lambda: os.path.exists(found) and os.path.getsize(found), 20, "the probe")
        seen = _read_json(found)
        assert seen["groups"] == sorted([GID, GROUP, GROUP - 1])
        assert seen["site"] == ["bin"] and seen["site_write"] == "Read-only file system"
        assert seen["flag"] == "ready\n"  # written by the operator's init container
        (pod,) = kube_site["sim"].pods()
        assert [c["name"] for c in pod["spec"]["initContainers"]] == ["carta-nss", "site-init"]
        assert pod["spec"]["securityContext"]["runAsUser"] == UID
        await spawner.stop()
    finally:
        await _stop_reflectors()
