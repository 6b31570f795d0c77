"""helm-values/: merged over the z2jh 4.4.0 chart defaults they validate against the chart's
schema; their hub.config (and any hub.extraConfig) loads into the real classes with no unknown
settings, and the pods CARTAKubeSpawner makes from them validate against Kubernetes."""

import json
import shlex
import subprocess
from importlib.metadata import entry_points
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from helpers.helm import CHART, VARIANTS, hub_config, load, merge, spawner_class_for, values_for
from helpers.hub import VENV_BIN
from k8s_simulator import write_kubeconfig
from kube_support import FakeUser, container, env, pod_manifest, use_kubeconfig

import carta_hub
from carta_hub.backend import SERVER_CONFIG_ENV

ROOT = Path(__file__).parent.parent
VALUES = ROOT / "helm-values"

pytestmark = [
    pytest.mark.fast,
    pytest.mark.skipif(not CHART.is_dir(), reason=f"{CHART} is missing"),
]


def configurable_classes(values):
    from jupyterhub.app import JupyterHub
    from jupyterhub.auth import Authenticator

    from carta_hub.backend import CartaBackend
    from carta_hub.hub.identity import IdentityResolver
    from carta_hub.hub.storage import CartaStorage

    authenticator = values["hub"]["config"]["JupyterHub"]["authenticator_class"]
    auth_class = entry_points(group="jupyterhub.authenticators")[authenticator].load()
    spawner_class = spawner_class_for(values)
    classes = (
        JupyterHub,
        Authenticator,
        auth_class,
        spawner_class,
        IdentityResolver,
        CartaStorage,
        CartaBackend,
    )
    # a section may name a class or any of its bases (LDAPAuthenticator for a subclass)
    return {base.__name__: cls for cls in classes for base in reversed(cls.__mro__)}


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
@pytest.mark.parametrize(
    "options", [{}, {"profile": "carta", "resources": "large"}, {"profile": "lab"}]
)
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
    assert nb["args"][0] == (
        "jupyterhub-singleuser" if options.get("profile") == "lab" else "carta-hub-singleuser"
    )
    passed = json.loads(env(pod)[SERVER_CONFIG_ENV])["config"]
    assert passed["CartaBackend"]["top_level_folder"] == "/ceph"
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
    (command,) = [
        line.split("|")[0]
        for line in (ROOT / "docs" / "kubernetes.md").read_text().splitlines()
        if line.startswith("carta-hub cephfs-volume ")
    ]
    argv = shlex.split(command)
    out = subprocess.run(
        [str(VENV_BIN / argv[0]), *argv[1:]], check=True, capture_output=True, text=True
    ).stdout
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


@pytest.mark.parametrize(
    "args, message",
    [
        (["--namespace", "Carta"], "namespace 'Carta' is not a Kubernetes name"),
        (["--namespace", "carta", "--secret", "csi-secret"], "give it as NAMESPACE/NAME"),
    ],
)
def test_cephfs_volume_command_refuses_bad_names(args, message):
    result = subprocess.run(
        [str(VENV_BIN / "carta-hub"), "cephfs-volume", "--cluster-id", "x", *args],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and message in result.stderr and not result.stdout
