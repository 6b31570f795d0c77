"""helm-values/: merged over the z2jh 4.4.0 chart defaults they validate against the chart's
schema; their hub.config (and any hub.extraConfig) loads into the real classes with no unknown
settings, and the pods CARTAKubeSpawner makes from them validate against Kubernetes."""

import copy
import shlex
import subprocess
from importlib.metadata import entry_points
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from traitlets.config import Config

import carta_hub
from helpers.hub import VENV_BIN
from kube_support import FakeUser, container, pod_manifest, use_kubeconfig
from k8s_simulator import write_kubeconfig

ROOT = Path(__file__).parent.parent
VALUES = ROOT / "helm-values"
CHART = ROOT.parent / "shared" / "z2jh-4.4.0"
VARIANTS = {"oidc": {"oauth_user": {"preferred_username": "jo", "uidNumber": 23502,
                                    "gidNumber": 23500, "gidNumbers": [23600]}},
            "ldap": {"user_attributes": {"uid": ["alice"], "uidNumber": [23501],
                                         "gidNumber": [23500], "homeDirectory": ["/ceph/home/alice"]}}}

pytestmark = [pytest.mark.fast,
              pytest.mark.skipif(not CHART.is_dir(), reason=f"{CHART} is missing")]


def load(path):
    with open(path) as f:
        return yaml.safe_load(f)


def merge(base, override):
    """Helm's value merge: dicts merge, a null deletes the key, anything else replaces."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def values_for(variant):
    return merge(merge(load(CHART / "values.yaml"), load(VALUES / "base.yaml")),
                 load(VALUES / f"{variant}.yaml"))


def hub_config(values):
    """The Hub's traitlets config as the chart's jupyterhub_config.py builds it, for the
    settings that reach a user pod: singleuser.*, then hub.config, then the hub image's
    jupyterhub_config.d (images/hub-config.d), then hub.extraConfig."""
    su, c = values["singleuser"], Config()
    c.KubeSpawner.image = f"{su['image']['name']}:{su['image']['tag']}"
    c.Spawner.cmd = su["cmd"]
    c.KubeSpawner.profile_list = su["profileList"]
    c.KubeSpawner.mem_guarantee = su["memory"]["guarantee"]
    c.KubeSpawner.start_timeout = su["startTimeout"]
    c.KubeSpawner.namespace = "carta"
    for trait, key in (("uid", "uid"), ("fs_gid", "fsGid")):
        if su.get(key) is not None:
            setattr(c.KubeSpawner, trait, su[key])
    if su["storage"]["type"] == "dynamic":
        c.KubeSpawner.storage_pvc_ensure = True
        c.KubeSpawner.volumes = [{"name": "home", "persistentVolumeClaim": {
            "claimName": "claim-{username}"}}]
        c.KubeSpawner.volume_mounts = [{"name": "home",
                                        "mountPath": su["storage"]["homeMountPath"]}]
    if su["cloudMetadata"]["blockWithIptables"]:
        c.KubeSpawner.init_containers = [{
            "name": "block-cloud-metadata", "image": "quay.io/jupyterhub/k8s-network-tools",
            "command": ["iptables", "-A", "OUTPUT", "-d", su["cloudMetadata"]["ip"], "-j", "DROP"],
            "securityContext": {"privileged": True, "runAsUser": 0,
                                "capabilities": {"add": ["NET_ADMIN"]}}}]
    c.merge(Config(values["hub"]["config"]))
    for path in sorted((ROOT / "images" / "hub-config.d").glob("*.py")):
        exec(path.read_text(), {"c": c})
    for snippet in (values["hub"].get("extraConfig") or {}).values():
        exec(snippet, {"c": c})
    return c


def configurable_classes(values):
    from carta_hub.backend import CartaBackend
    from carta_hub.hub.identity import IdentityResolver
    from carta_hub.hub.storage import CartaStorage
    from jupyterhub.app import JupyterHub
    from jupyterhub.auth import Authenticator

    authenticator = values["hub"]["config"]["JupyterHub"]["authenticator_class"]
    auth_class = entry_points(group="jupyterhub.authenticators")[authenticator].load()
    spawner_class = spawner_class_for(values)
    classes = (JupyterHub, Authenticator, auth_class, spawner_class,
               IdentityResolver, CartaStorage, CartaBackend)
    # a section may name a class or any of its bases (LDAPAuthenticator for a subclass)
    return {base.__name__: cls for cls in classes for base in reversed(cls.__mro__)}


def spawner_class_for(values):
    name = hub_config(values).JupyterHub.spawner_class
    return entry_points(group="jupyterhub.spawners")[name].load()


@pytest.mark.parametrize("variant", VARIANTS)
def test_values_validate_against_chart_schema(variant):
    jsonschema.validate(values_for(variant), load(CHART / "values.schema.yaml"))


@pytest.mark.parametrize("variant", VARIANTS)
def test_hub_config_has_no_unknown_settings(variant):
    values = values_for(variant)
    classes = configurable_classes(values)
    for section, settings in values["hub"]["config"].items():
        cls = classes[section]
        unknown = set(settings) - set(cls.class_trait_names(config=True))
        assert not unknown, f"{variant}: {section} has no settings {unknown}"


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("options", [{}, {"profile": "carta", "resources": "large"},
                                     {"profile": "lab"}])
async def test_pods_from_values(variant, options, tmp_path, monkeypatch):
    use_kubeconfig(monkeypatch, write_kubeconfig(tmp_path / "kc", "http://127.0.0.1:9"))
    values = values_for(variant)
    cls = spawner_class_for(values)
    login = "jo" if variant == "oidc" else "alice"
    spawner = cls(user=FakeUser(login, VARIANTS[variant]), config=hub_config(values), _mock=True)
    spawner.user_options = options
    pod = await pod_manifest(spawner)
    for version in ("1.30.0", kubernetes_validate.latest_version()):
        kubernetes_validate.validate(pod, version, strict=True)
    nb = container(pod)
    assert nb["image"] == f"registry.example.org/carta-hub/singleuser:{carta_hub.__version__}"
    assert nb["args"][0] == ("jupyterhub-singleuser" if options.get("profile") == "lab"
                             else "carta-hub-singleuser")
    assert "--CartaBackend.top_level_folder=/ceph" in nb["args"]
    # the identity's, not the chart's uid 1000 / fsGid 100
    assert nb["securityContext"]["runAsUser"] in (23501, 23502)
    assert pod["spec"]["securityContext"]["runAsUser"] in (23501, 23502)
    assert "fsGroup" not in pod["spec"]["securityContext"]
    assert not [v for v in pod["spec"]["volumes"] if "claim-" in str(v)]  # no home PVC
    mounts = {m["mountPath"]: m for m in nb["volumeMounts"]}
    assert mounts[f"/ceph/home/{login}"]["subPath"] == f"home/{login}"
    assert mounts["/ceph/data"]["readOnly"]
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["carta-nss"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_tls_for_per_user_origins(variant):
    """tls.yaml over base.yaml and a login: valid for the chart; the chart's proxy terminates
    TLS with the secret's certificate and, as subdomain_host is set, routes by host (chart
    4.4.0 templates/proxy/deployment.yaml: --host-routing when
    hub.config.JupyterHub.subdomain_host)."""
    values = merge(values_for(variant), load(VALUES / "tls.yaml"))
    jsonschema.validate(values, load(CHART / "values.schema.yaml"))
    https = values["proxy"]["https"]
    assert https["enabled"] and https["type"] == "secret" and https["secret"]["name"]
    hub = values["hub"]["config"]["JupyterHub"]
    assert hub["subdomain_host"].startswith("https://") and hub["authenticator_class"]


def test_cephfs_volume_command_of_the_guide(tmp_path):
    """docs/kubernetes.md's `carta-hub cephfs-volume` prints the claim base.yaml mounts, bound
    to its volume only, and both validate against Kubernetes."""
    (command,) = [line.split("|")[0] for line in (ROOT / "docs" / "kubernetes.md").read_text()
                  .splitlines() if line.startswith("carta-hub cephfs-volume ")]
    argv = shlex.split(command)
    out = subprocess.run([str(VENV_BIN / argv[0]), *argv[1:]], check=True,
                         capture_output=True, text=True).stdout
    pv, pvc = yaml.safe_load_all(out)
    for doc in (pv, pvc):
        for version in ("1.30.0", kubernetes_validate.latest_version()):
            kubernetes_validate.validate(doc, version, strict=True)
    claim = load(VALUES / "base.yaml")["hub"]["config"]["CartaStorage"]["mounts"][0]["pvc"]
    assert pvc["metadata"] == {"name": claim, "namespace": "carta"}
    assert pv["spec"]["claimRef"] == {"namespace": "carta", "name": claim}
    assert pvc["spec"]["volumeName"] == pv["metadata"]["name"]
    assert pv["spec"]["storageClassName"] == pvc["spec"]["storageClassName"] == ""
    assert pv["spec"]["csi"]["volumeAttributes"]["staticVolume"] == "true"


@pytest.mark.parametrize("args, message", [
    (["--namespace", "Carta"], "namespace 'Carta' is not a Kubernetes name"),
    (["--namespace", "carta", "--secret", "csi-secret"], "give it as NAMESPACE/NAME"),
])
def test_cephfs_volume_command_refuses_bad_names(args, message):
    result = subprocess.run([str(VENV_BIN / "carta-hub"), "cephfs-volume", "--cluster-id", "x",
                             *args], capture_output=True, text=True)
    assert result.returncode == 2 and message in result.stderr and not result.stdout
