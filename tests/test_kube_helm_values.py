"""helm-values/: merged over the z2jh 4.4.0 chart defaults they validate against the chart's
schema; their hub.config (and any hub.extraConfig) loads into the real classes with no unknown
settings, and the pods CARTAKubeSpawner makes from them validate against Kubernetes."""

import base64
import json
import shlex
import subprocess
from importlib.metadata import entry_points
from pathlib import Path
from urllib.parse import urlparse

import jsonschema
import kubernetes_validate
import pytest
import yaml
from helpers.helm import (
    CHART,
    VARIANTS,
    allows,
    hub_config,
    hub_network_policy,
    hub_pod,
    hub_service,
    load,
    merge,
    proxy_network_policy,
    slurm_values_for,
    spawner_class_for,
    values_for,
)
from helpers.hub import VENV_BIN
from jupyterhub.objects import Hub
from k8s_simulator import write_kubeconfig
from kube_support import FakeUser, container, env, pod_manifest, use_kubeconfig

import carta_hub
from carta_hub.backend import SERVER_CONFIG_ENV
from carta_hub.hub.identity import IdentityResolver
from carta_hub.hub.slurm.spawner import CARTASlurmSpawner

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


# Hub on Kubernetes, CARTA on Slurm (helm-values/slurm.yaml) with each login
SLURM_LOGINS = {f"slurm+{login}": login for login in VARIANTS}
LOGINS = {"oidc": "jo", "ldap": "alice"}


def any_values(name):
    return slurm_values_for(SLURM_LOGINS[name]) if name in SLURM_LOGINS else values_for(name)


@pytest.mark.parametrize("variant", [*VARIANTS, *SLURM_LOGINS])
def test_values_validate_against_chart_schema(variant):
    jsonschema.validate(any_values(variant), load(CHART / "values.schema.yaml"))


@pytest.mark.parametrize("variant", [*VARIANTS, *SLURM_LOGINS])
def test_hub_config_has_no_unknown_settings(variant):
    values = any_values(variant)
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
    # an open tab nobody uses ends with the chart's cull.timeout (its PINGs keep the culler
    # off), a closed one before the culler's next round (docs/idle-culling.md)
    cull, poll = values["cull"], 30  # Spawner.poll_interval
    assert passed["CartaBackend"]["idle_timeout"] == cull["timeout"]
    assert passed["CartaBackend"]["exit_timeout"] + poll + 5 <= cull["every"]
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


# --- Hub on Kubernetes, CARTA on Slurm (helm-values/slurm.yaml, docs/slurm-from-kubernetes.md)

COMPUTE_NODE = "10.20.3.4"  # a compute node (a private address, as HPC networks use)
GUIDE = ROOT / "docs" / "slurm-from-kubernetes.md"


def validate_k8s(doc):
    for version in ("1.30.0", kubernetes_validate.latest_version()):
        kubernetes_validate.validate(doc, version, strict=True)


def guide_secret():
    """The Secret the guide's `kubectl create secret generic` command makes, and that
    command (kubectl's generic secret: --from-file=KEY=PATH, the file's bytes as data)."""
    (command,) = [
        line.strip()
        for line in GUIDE.read_text().splitlines()
        if line.strip().startswith("kubectl create secret generic ")
    ]
    argv = shlex.split(command)
    name, namespace = argv[4], argv[argv.index("-n") + 1]
    (source,) = [a.split("=", 1)[1] for a in argv if a.startswith("--from-file=")]
    key, _ = source.split("=", 1)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "Opaque",
        "data": {key: base64.b64encode(bytes(32)).decode()},
    }
    return secret, command


async def slurm_spawner(values, login):
    """The spawner the chart's Hub makes for ``login``'s first start, with its job script
    and environment (JUPYTERHUB_API_URL...) as it would submit them."""
    cls = spawner_class_for(values)
    spawner = cls(user=FakeUser(LOGINS[login], VARIANTS[login]), config=hub_config(values))
    names = await spawner._names()
    spawner._job_names, spawner._job = names, spawner.validate_resources({}, names)
    script = await spawner._get_batch_script(keepvars="JUPYTERHUB_API_TOKEN")
    spawner.hub = Hub(base_url="/hub/")  # what get_env reads of the Hub
    spawner.user_env = lambda env: env  # batchspawner's looks the user up in this host's passwd
    return spawner, script, spawner.get_env()


@pytest.mark.parametrize("login", VARIANTS)
async def test_slurm_values_run_the_slurm_spawner(login):
    """The chart's Hub runs CARTASlurmSpawner (hub.extraConfig runs after the hub image's
    jupyterhub_config.d, which names carta-kube) through slurmrestd; the job it would submit
    runs CARTA (whatever the chart's singleuser.cmd) in the image with /ceph bound, in the
    student's home from the login, and calls the Hub at the address compute nodes reach."""
    values = slurm_values_for(login)
    assert spawner_class_for(values) is CARTASlurmSpawner
    spawner, script, job_env = await slurm_spawner(values, login)
    settings = values["hub"]["config"]["CARTASlurmSpawner"]
    assert spawner.slurmrestd_url == settings["slurmrestd_url"]
    assert spawner.jwt_key_file == settings["jwt_key_file"]
    # identities from the login only: the hub pod's passwd is not the cluster's
    assert IdentityResolver(parent=spawner).sources == ["auth_state", "mapping"]
    home = f"/ceph/home/{LOGINS[login]}"
    assert f"#SBATCH --chdir={home}\n" in script
    (srun,) = [line for line in script.splitlines() if line.startswith("srun ")]
    argv = shlex.split(srun)
    assert argv[argv.index("--bind") + 1] == "/ceph:/ceph"
    assert settings["container_image"] in argv and argv[-1] == "carta-hub-singleuser"
    api = urlparse(job_env["JUPYTERHUB_API_URL"])
    assert f"{api.scheme}://{api.netloc}" == settings["hub_connect_url"]
    assert api.path == "/hub/api"
    assert api.port == values["hub"]["service"]["ports"]["nodePort"]
    # only the jobs use it: the proxy and the culler keep the chart's in-cluster hub:8081
    assert "hub_connect_url" not in hub_config(values).JupyterHub


def test_slurm_values_hub_service_pods_and_key():
    """The hub Service, the hub and proxy pods' additions and the guide's Secret validate
    against Kubernetes; the Service opens the port hub_connect_url names; the key is the
    Secret's, read-only and readable by the Hub's account only (with the pod's fsGroup)."""
    values = slurm_values_for("oidc")
    hub, settings = values["hub"], values["hub"]["config"]["CARTASlurmSpawner"]
    service, pod = hub_service(values), hub_pod(values)
    proxy_pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "proxy"},
        "spec": {
            "containers": [{"name": "chp", "image": "quay.io/jupyterhub/configurable-http-proxy"}],
            **values["proxy"]["chp"]["extraPodSpec"],
        },
    }
    secret, command = guide_secret()
    for doc in (service, pod, proxy_pod, secret):
        validate_k8s(doc)
    (port,) = service["spec"]["ports"]
    assert service["spec"]["type"] == "NodePort" and port["port"] == 8081
    assert 30000 <= port["nodePort"] <= 32767  # the API server's default NodePort range
    assert urlparse(settings["hub_connect_url"]).port == port["nodePort"]
    # the key file: in a read-only mount of a volume of the guide's Secret, under its key
    key = Path(settings["jwt_key_file"])
    (mount,) = [m for m in hub["extraVolumeMounts"] if m["mountPath"] == str(key.parent)]
    assert mount["readOnly"] is True
    (volume,) = [v for v in hub["extraVolumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    assert list(secret["data"]) == [key.name]
    mode = volume["secret"]["defaultMode"]
    assert mode & 0o040 and not mode & 0o007  # the group's (fsGroup) alone
    assert (
        pod["spec"]["securityContext"]["fsGroup"] == hub["containerSecurityContext"]["runAsGroup"]
    )
    # the slurm.yaml header gives the same command
    assert command in (VALUES / "slurm.yaml").read_text()
    # both pods resolve Slurm's node names in the compute nodes' domain
    searches = pod["spec"]["dnsConfig"]["searches"]
    assert searches and proxy_pod["spec"]["dnsConfig"]["searches"] == searches


def test_slurm_values_network_policies():
    """The chart's NetworkPolicies, as rendered from the values, validate and let compute
    nodes reach the Hub API through the NodePort (the chart's default admits only labelled
    pods), and let the proxy and the Hub reach the server on a compute node."""
    values = slurm_values_for("oidc")
    hub_policy, proxy_policy = hub_network_policy(values), proxy_network_policy(values)
    for doc in (hub_policy, proxy_policy):
        validate_k8s(doc)
    hub_ports = {"http": 8081}
    ingress = hub_policy["spec"]["ingress"]
    assert allows(ingress, COMPUTE_NODE, 8081, hub_ports, peers="from")
    assert not allows(ingress, COMPUTE_NODE, 8000, hub_ports, peers="from")
    chart_policy = load(CHART / "values.yaml")["hub"]["networkPolicy"]
    chart_default = hub_network_policy(
        {**values, "hub": {**values["hub"], "networkPolicy": chart_policy}}
    )
    assert not allows(chart_default["spec"]["ingress"], COMPUTE_NODE, 8081, hub_ports, "from")
    for policy in (proxy_policy, hub_policy):  # a server's port, slurmrestd's
        assert allows(policy["spec"]["egress"], COMPUTE_NODE, 41234)
        assert allows(policy["spec"]["egress"], COMPUTE_NODE, 6820)
    # through the chart's default egressAllowRules: a site that turned them off adds a rule
    strict = {"privateIPs": False, "nonPrivateIPs": False}
    chp = merge(values["proxy"]["chp"], {"networkPolicy": {"egressAllowRules": strict}})
    strict_proxy = proxy_network_policy({**values, "proxy": {**values["proxy"], "chp": chp}})
    assert not allows(strict_proxy["spec"]["egress"], COMPUTE_NODE, 41234)
