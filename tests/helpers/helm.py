"""The Zero-to-JupyterHub 4.4.0 chart (its values and schema, in ../shared beside the
checkout), helm-values/ merged over it as helm does, and the Hub config the chart's
jupyterhub_config.py builds from them: tests/test_kube_helm_values.py and tests/test_docs.py."""

import copy
import ipaddress
from importlib.metadata import entry_points
from pathlib import Path

import yaml
from traitlets.config import Config

ROOT = Path(__file__).resolve().parents[2]
VALUES = ROOT / "helm-values"
CHART = ROOT.parent / "shared" / "z2jh-4.4.0"
VARIANTS = {
    "oidc": {
        "oauth_user": {
            "preferred_username": "jo",
            "uidNumber": 23502,
            "gidNumber": 23500,
            "gidNumbers": [23600],
        }
    },
    "ldap": {
        "user_attributes": {
            "uid": ["alice"],
            "uidNumber": [23501],
            "gidNumber": [23500],
            "homeDirectory": ["/ceph/home/alice"],
        }
    },
}


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
    return merge(
        merge(load(CHART / "values.yaml"), load(VALUES / "base.yaml")),
        load(VALUES / f"{variant}.yaml"),
    )


def slurm_values_for(login):
    """Hub on Kubernetes, CARTA on Slurm: helm-values/slurm.yaml, then a login (oidc, ldap)
    over the chart defaults, as docs/slurm-from-kubernetes.md installs them."""
    return merge(
        merge(load(CHART / "values.yaml"), load(VALUES / "slurm.yaml")),
        load(VALUES / f"{login}.yaml"),
    )


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
        c.KubeSpawner.volumes = [
            {"name": "home", "persistentVolumeClaim": {"claimName": "claim-{username}"}}
        ]
        c.KubeSpawner.volume_mounts = [
            {"name": "home", "mountPath": su["storage"]["homeMountPath"]}
        ]
    if su["cloudMetadata"]["blockWithIptables"]:
        c.KubeSpawner.init_containers = [
            {
                "name": "block-cloud-metadata",
                "image": "quay.io/jupyterhub/k8s-network-tools",
                "command": [
                    "iptables",
                    "-A",
                    "OUTPUT",
                    "-d",
                    su["cloudMetadata"]["ip"],
                    "-j",
                    "DROP",
                ],
                "securityContext": {
                    "privileged": True,
                    "runAsUser": 0,
                    "capabilities": {"add": ["NET_ADMIN"]},
                },
            }
        ]
    c.merge(Config(values["hub"]["config"]))
    for path in sorted((ROOT / "images" / "hub-config.d").glob("*.py")):
        exec(path.read_text(), {"c": c})
    for snippet in (values["hub"].get("extraConfig") or {}).values():
        exec(snippet, {"c": c})
    return c


def spawner_class_for(values):
    name = hub_config(values).JupyterHub.spawner_class
    return entry_points(group="jupyterhub.spawners")[name].load()


# --- what chart 4.4.0's templates make of the values (templates/hub/service.yaml,
# templates/hub/deployment.yaml, templates/hub/netpol.yaml, templates/proxy/netpol.yaml,
# templates/_helpers-netpol.tpl), for the parts carta-hub's values set ---

PRIVATE_IPS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
HUB_LABELS = {"app": "jupyterhub", "component": "hub", "release": "carta"}
PROXY_LABELS = {"app": "jupyterhub", "component": "proxy", "release": "carta"}
USER_LABELS = {"app": "jupyterhub", "component": "singleuser-server", "release": "carta"}


def hub_service(values):
    """The hub Service (templates/hub/service.yaml)."""
    svc = values["hub"]["service"]
    port = {"name": "hub", "port": 8081, "targetPort": "http"}
    if svc["ports"].get("nodePort"):
        port["nodePort"] = svc["ports"]["nodePort"]
    spec = {"type": svc["type"], "selector": HUB_LABELS, "ports": [port, *svc["extraPorts"]]}
    if svc.get("loadBalancerIP"):
        spec["loadBalancerIP"] = svc["loadBalancerIP"]
    spec["ipFamilyPolicy"] = svc["ipFamilyPolicy"]
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hub"}, "spec": spec}


def hub_pod(values):
    """The hub Deployment's pod: its volumes, mounts, security contexts and extraPodSpec
    (templates/hub/deployment.yaml), as a Pod."""
    hub = values["hub"]
    container = {
        "name": "hub",
        "image": f"{hub['image']['name']}:{hub['image']['tag']}",
        "securityContext": hub["containerSecurityContext"],
        "volumeMounts": [
            {"mountPath": "/usr/local/etc/jupyterhub/config/", "name": "config"},
            {"mountPath": "/usr/local/etc/jupyterhub/secret/", "name": "secret"},
            *hub["extraVolumeMounts"],
            {"mountPath": "/srv/jupyterhub", "name": "pvc"},
        ],
        "ports": [{"name": "http", "containerPort": 8081}],
    }
    volumes = [
        {"name": "config", "configMap": {"name": "hub"}},
        {"name": "secret", "secret": {"secretName": "hub"}},
        *hub["extraVolumes"],
        {"name": "pvc", "persistentVolumeClaim": {"claimName": "hub-db-dir"}},
    ]
    spec = {"securityContext": hub["podSecurityContext"], "volumes": volumes}
    spec = {**spec, "containers": [container], **hub["extraPodSpec"]}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hub"}, "spec": spec}


def egress_allow_rules(values, netpol):
    """templates/_helpers-netpol.tpl: jupyterhub.networkPolicy.renderEgressRules."""
    allow = netpol["egressAllowRules"]
    metadata = f"{values['singleuser']['cloudMetadata']['ip']}/32"
    private = [{"ipBlock": {"cidr": cidr}} for cidr in PRIVATE_IPS]
    rules, dns = [], []
    if allow["dnsPortsCloudMetadataServer"]:
        dns.append({"ipBlock": {"cidr": metadata}})
    if allow["dnsPortsKubeSystemNamespace"]:
        dns.append(
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}
        )
    if allow["dnsPortsPrivateIPs"]:
        dns += private
    if dns:
        ports = [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
        rules.append({"ports": ports, "to": dns})
    if allow["nonPrivateIPs"]:
        everywhere = {"cidr": "0.0.0.0/0", "except": [*PRIVATE_IPS, metadata]}
        rules.append({"to": [{"ipBlock": everywhere}]})
    if allow["privateIPs"]:
        rules.append({"to": private})
    if allow["cloudMetadataServer"]:
        rules.append({"to": [{"ipBlock": {"cidr": metadata}}]})
    return rules + netpol["egress"]


def _network_policy(name, labels, ingress, egress):
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name},
        "spec": {
            "podSelector": {"matchLabels": labels},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": egress,
        },
    }


def _labeled(label, port):
    return {"ports": [{"port": port}], "from": [{"podSelector": {"matchLabels": {label: "true"}}}]}


def hub_network_policy(values):
    """templates/hub/netpol.yaml (interNamespaceAccessLabels: ignore)."""
    netpol = values["hub"]["networkPolicy"]
    ingress = []
    if netpol["allowedIngressPorts"]:
        ingress.append({"ports": [{"port": p} for p in netpol["allowedIngressPorts"]]})
    ingress += [_labeled("hub.jupyter.org/network-access-hub", "http"), *netpol["ingress"]]
    egress = [
        {"to": [{"podSelector": {"matchLabels": PROXY_LABELS}}], "ports": [{"port": 8001}]},
        {"to": [{"podSelector": {"matchLabels": USER_LABELS}}], "ports": [{"port": 8888}]},
        *egress_allow_rules(values, netpol),
    ]
    return _network_policy("hub", HUB_LABELS, ingress, egress)


def proxy_network_policy(values):
    """templates/proxy/netpol.yaml (interNamespaceAccessLabels: ignore, no manual https)."""
    netpol = values["proxy"]["chp"]["networkPolicy"]
    ingress = []
    if netpol["allowedIngressPorts"]:
        ingress.append({"ports": [{"port": p} for p in netpol["allowedIngressPorts"]]})
    ingress += [
        _labeled("hub.jupyter.org/network-access-proxy-http", "http"),
        _labeled("hub.jupyter.org/network-access-proxy-api", "api"),
        *netpol["ingress"],
    ]
    egress = [
        {"to": [{"podSelector": {"matchLabels": HUB_LABELS}}], "ports": [{"port": 8081}]},
        {"to": [{"podSelector": {"matchLabels": USER_LABELS}}], "ports": [{"port": 8888}]},
        *egress_allow_rules(values, netpol),
    ]
    return _network_policy("proxy", PROXY_LABELS, ingress, egress)


def allows(rules, address, port, port_names=None, peers="to"):
    """Whether NetworkPolicy ``rules`` (ingress: peers="from") let TCP traffic between the
    pod and ``address`` (outside the cluster: no pod or namespace selector matches it) on
    ``port``; ``port_names`` maps the pod's named ports to numbers."""
    ip = ipaddress.ip_address(address)
    names = port_names or {}

    def port_ok(p):
        if p.get("protocol", "TCP") != "TCP":
            return False
        number = names.get(p["port"], p["port"])
        return number == port or number <= port <= p.get("endPort", number)

    def peer_ok(peer):
        block = peer.get("ipBlock")
        return bool(block) and (
            ip in ipaddress.ip_network(block["cidr"])
            and not any(ip in ipaddress.ip_network(e) for e in block.get("except", []))
        )

    return any(
        ("ports" not in rule or any(port_ok(p) for p in rule["ports"]))
        and (peers not in rule or any(peer_ok(p) for p in rule[peers]))
        for rule in rules
    )
