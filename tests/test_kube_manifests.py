"""CARTAKubeSpawner pod manifests: every storage mode x identity source x profile validates
against the Kubernetes OpenAPI schemas (strict, 1.30 and the newest kubernetes-validate
knows), runs as the user's identity and mounts the user's storage."""

import itertools
import json
import re

import kubernetes_validate
import pytest
from k8s_simulator import write_kubeconfig
from kube_support import (
    LDAP,
    OIDC,
    FakeUser,
    container,
    env,
    make_spawner,
    pod_manifest,
    use_kubeconfig,
)

from carta_hub.backend import SERVER_CONFIG_ENV

VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]

STORAGE = {
    "cephfs-pvc": [
        {"pvc": "cephfs", "sub_path": "home/{login}", "mount_path": "/ceph/home/{login}"},
        {"pvc": "cephfs", "sub_path": "data", "mount_path": "/ceph/data", "read_only": True},
    ],
    "hostpath": [
        {"host_path": "/mnt/ceph/home/{login}", "mount_path": "/ceph/home/{login}"},
        {"host_path": "/mnt/ceph/data", "mount_path": "/ceph/data", "read_only": True},
    ],
}

IDENTITIES = {
    # source -> (auth_state, IdentityResolver config, expected uid, gid, groups, login)
    "ldap": (LDAP, {}, 23501, 23500, [], "alice"),
    "oidc": (
        OIDC,
        {
            "uid_attribute": "uid_number",
            "gid_attribute": "gid_number",
            "groups_attribute": "gids",
            "name_attribute": "preferred_username",
        },
        23502,
        23500,
        [23600, 23601],
        "jo",
    ),
    "mapping": (None, {"mapping_file": "MAPPING"}, 23503, 23500, [23600], "a.student"),
    "nss": (None, {"sources": ["nss"]}, None, None, None, None),
}

PROFILES = {
    "carta": ({}, ["carta-hub-singleuser"], "", "8589934592"),
    "carta-large": (
        {"profile": "carta", "resources": "large"},
        ["carta-hub-singleuser"],
        "",
        "34359738368",
    ),
    "lab": ({"profile": "lab"}, ["jupyterhub-singleuser"], "/lab", "8589934592"),
}


@pytest.fixture(autouse=True)
def kubeconfig(tmp_path, monkeypatch):
    use_kubeconfig(monkeypatch, write_kubeconfig(tmp_path / "kc", "http://127.0.0.1:9"))


@pytest.fixture
def nss_user():
    from helpers.users import ensure_user, remove_user

    entry = ensure_user("carta-nss-t", uid=23504)
    yield entry
    remove_user("carta-nss-t")


@pytest.mark.parametrize(
    "storage, source, profile",
    [  # nss: makes an account (root)
        pytest.param(*case, marks=() if case[1] == "nss" else pytest.mark.fast)
        for case in itertools.product(STORAGE, IDENTITIES, PROFILES)
    ],
)
async def test_pod_manifest(storage, source, profile, tmp_path, request):
    state, resolver, uid, gid, groups, login = IDENTITIES[source]
    name = {"ldap": "alice", "oidc": "jo@uni.edu", "mapping": "a.student"}.get(source)
    if source == "nss":
        entry = request.getfixturevalue("nss_user")
        name, uid, gid, groups, login = entry.pw_name, entry.pw_uid, entry.pw_gid, [], entry.pw_name
    if "mapping_file" in resolver:
        path = tmp_path / "ids.yaml"
        path.write_text("a.student: {uid: 23503, gid: 23500, groups: [23600]}\n")
        resolver = {"mapping_file": str(path)}
    home = entry.pw_dir if source == "nss" else f"/ceph/home/{login}"
    options, cmd, default_url, mem_limit = PROFILES[profile]
    spawner = make_spawner(
        FakeUser(name, state),
        {
            "IdentityResolver": {**resolver, "home_template": "/ceph/home/{login}"},
            "CartaStorage": {"mounts": STORAGE[storage]},
            "CartaBackend": {"top_level_folder": "/ceph", "idle_timeout": 3600},
        },
        options,
    )
    pod = await pod_manifest(spawner)

    for version in VERSIONS:
        kubernetes_validate.validate(pod, version, strict=True)

    psc, nb = pod["spec"]["securityContext"], container(pod)
    assert (psc["runAsUser"], psc["runAsGroup"], psc["supplementalGroups"]) == (uid, gid, groups)
    assert psc["runAsNonRoot"] and "fsGroup" not in psc
    for c in (nb, container(pod, "carta-nss")):
        sc = c["securityContext"]
        assert (sc["runAsUser"], sc["runAsGroup"]) == (uid, gid)
        assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"} and sc["readOnlyRootFilesystem"]
    assert nb["args"] == cmd  # the settings are in the environment, not on the command line
    passed = json.loads(env(pod)[SERVER_CONFIG_ENV])
    assert passed["config"]["CartaBackend"] == {"idle_timeout": 3600, "top_level_folder": "/ceph"}
    assert passed["user"] == {
        "username": name,
        "login": login,
        "uid": uid,
        "gid": gid,
        "home": home,
    }
    assert nb["resources"]["limits"]["memory"] == int(mem_limit)
    e = env(pod)
    assert e["HOME"] == nb["workingDir"] == home
    assert (
        e["JUPYTERHUB_DEFAULT_URL"] == default_url
        if default_url
        else "JUPYTERHUB_DEFAULT_URL" not in e
    )
    assert e["NSS_WRAPPER_PASSWD"] == "/run/carta-hub/passwd"
    assert f"{login}:x:{uid}:{gid}:" in env(pod, "carta-nss")["CARTA_PASSWD"]

    mounts = {m["mountPath"]: m for m in nb["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert home in mounts  # a storage mount, or an emptyDir when none holds HOME
    home, data = mounts[f"/ceph/home/{login}"], mounts["/ceph/data"]
    assert data["readOnly"] and not home["readOnly"]
    assert all("cephfs" not in v for v in volumes.values())  # never an in-tree cephfs volume
    if storage == "cephfs-pvc":
        assert home["subPath"] == f"home/{login}"
        assert volumes[home["name"]]["persistentVolumeClaim"] == {"claimName": "cephfs"}
    else:
        assert volumes[home["name"]]["hostPath"] == {
            "path": f"/mnt/ceph/home/{login}",
            "type": "Directory",
        }
    assert volumes[mounts["/tmp"]["name"]] == {"name": "carta-tmp", "emptyDir": {}}


@pytest.mark.fast
async def test_fs_group_only_when_asked():
    spawner = make_spawner(
        FakeUser("alice", LDAP),
        {"CARTAKubeSpawner": {"fs_group": True}, "KubeSpawner": {"fs_gid": 100}},
    )
    psc = (await pod_manifest(spawner))["spec"]["securityContext"]
    assert (psc["fsGroup"], psc["fsGroupChangePolicy"]) == (23500, "OnRootMismatch")
    # the chart's default singleuser.fsGid (100) must not leak into the pod
    spawner = make_spawner(FakeUser("alice", LDAP), {"KubeSpawner": {"fs_gid": 100, "uid": 1000}})
    pod = await pod_manifest(spawner)
    assert "fsGroup" not in pod["spec"]["securityContext"]
    assert container(pod)["securityContext"]["runAsUser"] == 23501


@pytest.mark.fast
async def test_home_without_storage_is_an_empty_dir():
    pod = await pod_manifest(make_spawner(FakeUser("alice", LDAP)))
    mounts = {m["mountPath"]: m["name"] for m in container(pod)["volumeMounts"]}
    assert mounts["/ceph/home/alice"] == "carta-home"
    kubernetes_validate.validate(pod, VERSIONS[0], strict=True)


@pytest.mark.fast
async def test_storage_paths_do_not_depend_on_the_slug_scheme():
    """`{username}` is the escaped raw name, so paths survive a slug_scheme change."""
    state = {"user_attributes": {**LDAP["user_attributes"], "uid": ["Jo.Smith@Uni"]}}
    mounts = [{"pvc": "cephfs", "sub_path": "users/{username}", "mount_path": "/ceph/u/{login}"}]
    found, names = [], set()
    for scheme in ("safe", "escape"):
        spawner = make_spawner(
            FakeUser("jo.smith@uni", state),
            {"KubeSpawner": {"slug_scheme": scheme}, "CartaStorage": {"mounts": mounts}},
        )
        pod = await pod_manifest(spawner)
        found.append([(m["mountPath"], m.get("subPath")) for m in container(pod)["volumeMounts"]])
        names.add(pod["metadata"]["name"])
    assert len(names) == 2  # the slug scheme changes the pod name, not the paths
    assert found[0] == found[1]
    assert ("/ceph/u/Jo.Smith@Uni", "users/jo.smith@uni") in found[0]


SITE_VOLUME = {"name": "site-software", "hostPath": {"path": "/opt/site", "type": "Directory"}}
SITE_MOUNT = {"name": "site-software", "mountPath": "/opt/site", "readOnly": True}
SITE_INIT = {"name": "site-motd", "image": "busybox:1.36", "command": ["true"]}
LOCALHOST_SECCOMP = {"type": "Localhost", "localhostProfile": "profiles/carta.json"}
SITE_PSC = {
    "seccompProfile": LOCALHOST_SECCOMP,
    "sysctls": [{"name": "net.ipv4.ping_group_range", "value": "0 2147483647"}],
}
SITE_CSC = {"readOnlyRootFilesystem": True, "seLinuxOptions": {"level": "s0:c123,c456"}}
OPERATOR_FORMS = {  # the same settings in each form KubeSpawner accepts
    "lists": {
        "volumes": [SITE_VOLUME],
        "volume_mounts": [SITE_MOUNT],
        "init_containers": [SITE_INIT],
        "supplemental_gids": [4242],
        "pod_security_context": SITE_PSC,
        "container_security_context": SITE_CSC,
    },
    "dicts-and-callables": {
        "volumes": {"site": SITE_VOLUME},
        "volume_mounts": {"site": SITE_MOUNT},
        "init_containers": {"10-motd": SITE_INIT},
        "supplemental_gids": lambda spawner: [4242],
        "pod_security_context": lambda spawner: SITE_PSC,
        "container_security_context": lambda spawner: SITE_CSC,
    },
}


@pytest.mark.fast
@pytest.mark.parametrize("form", OPERATOR_FORMS)
async def test_operator_settings_combine_with_carta_hubs(form):
    """An operator's extra volume, mount, init container, supplemental group and security
    settings are all in the pod, with carta-hub's identity, storage and hardening."""
    spawner = make_spawner(
        FakeUser("jo@uni.edu", OIDC),
        {
            "KubeSpawner": OPERATOR_FORMS[form],
            "CARTAKubeSpawner": {"read_only_root_filesystem": False},
            "IdentityResolver": IDENTITIES["oidc"][1],
            "CartaStorage": {"mounts": STORAGE["cephfs-pvc"]},
        },
    )
    pod = await pod_manifest(spawner)
    for version in VERSIONS:
        kubernetes_validate.validate(pod, version, strict=True)

    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["site-software"] == SITE_VOLUME
    assert {"carta-storage-0", "carta-tmp", "carta-nss"} <= set(volumes)
    nb = container(pod)
    mounts = {m["mountPath"]: m for m in nb["volumeMounts"]}
    assert mounts["/opt/site"] == SITE_MOUNT
    assert {"/ceph/home/jo", "/ceph/data", "/tmp", "/run/carta-hub"} <= set(mounts)
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["carta-nss", "site-motd"]

    psc = pod["spec"]["securityContext"]
    assert psc["seccompProfile"] == LOCALHOST_SECCOMP and psc["sysctls"] == SITE_PSC["sysctls"]
    assert (psc["runAsUser"], psc["runAsGroup"], psc["runAsNonRoot"]) == (23502, 23500, True)
    assert psc["supplementalGroups"] == [23600, 23601, 4242]
    for c in (nb, container(pod, "carta-nss")):
        sc = c["securityContext"]
        assert (
            sc["readOnlyRootFilesystem"] is True
            and sc["seLinuxOptions"] == SITE_CSC["seLinuxOptions"]
        )
        assert sc["seccompProfile"] == LOCALHOST_SECCOMP  # the pod's, not RuntimeDefault
        assert (sc["runAsUser"], sc["runAsGroup"], sc["runAsNonRoot"]) == (23502, 23500, True)
        assert sc["allowPrivilegeEscalation"] is False and sc["privileged"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}

    # the operator's settings are unchanged, so the next spawn makes the same pod
    for name, value in OPERATOR_FORMS[form].items():
        assert getattr(spawner, name) == value
    assert await pod_manifest(spawner) == pod


WEAKENING = {
    # case -> (settings, what the refusal names)
    "privileged": ({"KubeSpawner": {"privileged": True}}, "privileged=True"),
    "escalation": (
        {"KubeSpawner": {"allow_privilege_escalation": True}},
        "allowPrivilegeEscalation=True",
    ),
    "capability": (
        {"KubeSpawner": {"container_security_context": {"capabilities": {"add": ["SYS_ADMIN"]}}}},
        "capabilities.add",
    ),
    "root-container": (
        {"KubeSpawner": {"container_security_context": {"runAsUser": 0}}},
        "runAsUser=0",
    ),
    "root-pod": (
        {"KubeSpawner": {"pod_security_context": {"runAsNonRoot": False}}},
        "runAsNonRoot=False",
    ),
    "unconfined": (
        {"KubeSpawner": {"pod_security_context": {"seccompProfile": {"type": "Unconfined"}}}},
        "seccompProfile",
    ),
    "writable-root": (
        {"KubeSpawner": {"container_security_context": {"readOnlyRootFilesystem": False}}},
        "read_only_root_filesystem = False",
    ),
    "profile": (
        {
            "KubeSpawner": {
                "profile_list": [
                    {
                        "display_name": "Debug",
                        "slug": "debug",
                        "kubespawner_override": {
                            "container_security_context": {"privileged": True}
                        },
                    }
                ]
            }
        },
        "privileged=True",
    ),
    "pod-config": (
        {"KubeSpawner": {"extra_pod_config": {"securityContext": {}}}},
        "use c.KubeSpawner.pod_security_context",
    ),
    "container-config": (
        {"KubeSpawner": {"extra_container_config": {"volume_mounts": []}}},
        "use c.KubeSpawner.volume_mounts",
    ),
    "volume-name": (
        {"KubeSpawner": {"volumes": [{"name": "carta-tmp", "emptyDir": {}}]}},
        "name 'carta-tmp' appears twice",
    ),
    "mount-path": (
        {
            "KubeSpawner": {
                "volumes": [SITE_VOLUME],
                "volume_mounts": [{**SITE_MOUNT, "mountPath": "/ceph/data"}],
            }
        },
        "mountPath '/ceph/data' appears twice",
    ),
    "root-init": (
        {
            "KubeSpawner": {
                "init_containers": [
                    {**SITE_INIT, "securityContext": {"runAsUser": 0, "runAsNonRoot": False}}
                ]
            }
        },
        "init_containers (site-motd) sets runAsUser=0",
    ),
    "init-capability": (
        {
            "KubeSpawner": {
                "init_containers": {
                    "motd": {
                        **SITE_INIT,
                        "securityContext": {"capabilities": {"add": ["NET_ADMIN"]}},
                    }
                }
            }
        },
        "capabilities.add=['NET_ADMIN']",
    ),
}


@pytest.mark.fast
@pytest.mark.parametrize("case", WEAKENING)
async def test_operator_settings_that_weaken_the_pod_are_refused(case):
    """A setting that would weaken carta-hub's hardening or drop its storage refuses the
    spawn with a message naming it, instead of being silently replaced."""
    from carta_hub.hub.kube import PodSettingError

    settings, message = WEAKENING[case]
    spawner = make_spawner(
        FakeUser("alice", LDAP), {**settings, "CartaStorage": {"mounts": STORAGE["hostpath"]}}
    )
    with pytest.raises(PodSettingError, match=re.escape(message)):
        await pod_manifest(spawner)
