"""The Zero-to-JupyterHub 4.4.0 chart (its values and schema, in ../shared beside the
checkout), helm-values/ merged over it as helm does, and the Hub config the chart's
jupyterhub_config.py builds from them: tests/test_kube_helm_values.py and tests/test_docs.py."""

import copy
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
