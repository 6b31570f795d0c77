"""CARTAKubeSpawner against the Kubernetes API simulator: identities an authenticator hands
over (LDAP attributes, OIDC claims) that map to root, a system account or nothing create no
pod. (tests/test_kube_simulator.py covers the mapping file and an unknown name.)"""

import os

import pytest
from helpers.ports import free_port
from k8s_simulator import write_kubeconfig
from kube_support import FakeUser, make_spawner, use_kubeconfig

from carta_hub.hub.identity import IdentityError
from carta_hub.hub.kube import CARTAKubeSpawner, PodSettingError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the simulator's kubelet needs root")

LDAP = "user_attributes"
CASES = [
    ("ldap-root", {LDAP: {"uidNumber": [0], "gidNumber": [5000]}}, LDAP, "UID 0"),
    ("ldap-gid0", {LDAP: {"uidNumber": [5001], "gidNumber": [0]}}, LDAP, "primary GID 0"),
    ("ldap-bin", {LDAP: {"uidNumber": [2], "gidNumber": [2]}}, LDAP, "UID 2 "),
    ("oidc-root", {"oauth_user": {"uid_number": "0", "gid_number": 5000}}, "oauth_user", "UID 0"),
    ("oidc-none", {"oauth_user": {"sub": "x"}}, "oauth_user", "No POSIX identity"),
    ("no-state", None, LDAP, "No POSIX identity"),
]


@pytest.mark.parametrize("name, state, key, message", CASES, ids=[c[0] for c in CASES])
async def test_no_pod_for_a_bad_identity(
    kube_site, tmp_path, monkeypatch, name, state, key, message
):
    use_kubeconfig(monkeypatch, write_kubeconfig(tmp_path / "kubeconfig", kube_site["sim"].url))
    spawner = make_spawner(
        FakeUser(name, auth_state=state),
        {
            "KubeSpawner": {
                "k8s_api_host": kube_site["sim"].url,
                "port": free_port(),
                "start_timeout": 10,
                "cmd": ["true"],
            },
            "IdentityResolver": {
                "sources": ["auth_state"],
                "auth_state_key": key,
                "uid_attribute": "uid_number" if key == "oauth_user" else "uidNumber",
                "gid_attribute": "gid_number" if key == "oauth_user" else "gidNumber",
            },
        },
    )
    try:
        with pytest.raises(IdentityError, match=message):
            await spawner.start()
        assert kube_site["sim"].pods() == []
    finally:
        await CARTAKubeSpawner._stop_all_reflectors()


WEAKENING = [  # an operator's (or a profile's) setting that would weaken the pod
    ("privileged", {"privileged": True}, "privileged=True"),
    (
        "capability",
        {"container_security_context": {"capabilities": {"add": ["SYS_ADMIN"]}}},
        "capabilities.add",
    ),
    ("root", {"pod_security_context": {"runAsUser": 0}}, "runAsUser=0"),
    (
        "pod-config",
        {"extra_pod_config": {"securityContext": {"runAsUser": 0}}},
        "extra_pod_config sets securityContext",
    ),
]


@pytest.mark.parametrize("name, kube, message", WEAKENING, ids=[c[0] for c in WEAKENING])
async def test_no_pod_for_a_weakening_setting(
    kube_site, tmp_path, monkeypatch, name, kube, message
):
    """Such a setting refuses the spawn with a message naming it: before, carta-hub replaced
    some silently and the pod ran; now none is made."""
    from kube_support import LDAP

    use_kubeconfig(monkeypatch, write_kubeconfig(tmp_path / "kubeconfig", kube_site["sim"].url))
    spawner = make_spawner(
        FakeUser("alice", LDAP),
        {
            "KubeSpawner": {
                "k8s_api_host": kube_site["sim"].url,
                "port": free_port(),
                "start_timeout": 10,
                "cmd": ["true"],
                **kube,
            }
        },
    )
    try:
        with pytest.raises(PodSettingError, match=message):
            await spawner.start()
        assert kube_site["sim"].pods() == []
    finally:
        await CARTAKubeSpawner._stop_all_reflectors()
