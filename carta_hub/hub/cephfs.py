"""The static ceph-csi PersistentVolume and claim through which user pods mount one CephFS tree
(``carta-hub cephfs-volume``). The claim is pre-bound to the volume and the volume to the claim,
so no other claim can take it; ``storageClassName: ""`` keeps the default class away."""

import re

import yaml

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
CAPACITY = "1Pi"  # informational for a static volume


def _label(what, value):
    if not DNS_LABEL.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} is not a Kubernetes name (lower-case letters, digits and '-')"
        )
    return value


def manifests(
    cluster_id: str,
    namespace: str,
    fs_name: str = "cephfs",
    secret: str = "ceph-csi/csi-cephfs-secret",
    claim: str = "cephfs",
    root: str = "/",
) -> str:
    """The PersistentVolume and PersistentVolumeClaim, as a YAML stream."""
    secret_namespace, _, secret_name = secret.partition("/")
    if not (
        secret_name
        and _label("secret namespace", secret_namespace)
        and _label("secret name", secret_name)
    ):
        raise ValueError(f"secret {secret!r}: give it as NAMESPACE/NAME")
    if not root.startswith("/"):
        raise ValueError(f"root {root!r}: give an absolute path inside the file system")
    volume = f"{_label('claim', claim)}-{_label('namespace', namespace)}"
    pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": volume},
        "spec": {
            "capacity": {"storage": CAPACITY},
            "accessModes": ["ReadWriteMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "claimRef": {"namespace": namespace, "name": claim},
            "csi": {
                "driver": "cephfs.csi.ceph.com",
                "volumeHandle": volume,
                "nodeStageSecretRef": {"name": secret_name, "namespace": secret_namespace},
                "volumeAttributes": {
                    "clusterID": cluster_id,
                    "fsName": fs_name,
                    "staticVolume": "true",
                    "rootPath": root,
                },
            },
        },
    }
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": claim, "namespace": namespace},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "storageClassName": "",
            "volumeName": volume,
            "resources": {"requests": {"storage": CAPACITY}},
        },
    }
    return yaml.safe_dump_all([pv, pvc], sort_keys=False)
