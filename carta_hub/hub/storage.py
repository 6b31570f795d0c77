"""The file trees a user's CARTA server sees, shared by the Kubernetes and Slurm spawners.

Configured once as ``c.CartaStorage.mounts``, a list of dicts; every path appears at the same
``mount_path`` inside a pod and inside an Apptainer container on the HPC cluster, so a user's
folders look the same everywhere::

    c.CartaStorage.mounts = [
        # CephFS through ceph-csi: an existing (static) PVC and a per-user subPath
        {"pvc": "cephfs-home", "sub_path": "home/{login}", "mount_path": "/ceph/home/{login}"},
        # CephFS mounted on every node, read-only data tree
        {"host_path": "/ceph/data", "mount_path": "/ceph/data", "read_only": True},
    ]

Keys: ``mount_path`` (required), exactly one of ``pvc`` (claim name) or ``host_path`` (a
directory on the node, which must exist: ``type: Directory``), optional ``sub_path`` (only with
``pvc``), ``read_only`` (default false), ``hpc_path`` (where the tree is on HPC nodes when it
differs from ``host_path``/``mount_path``).

The paths are templates of the user fields (:data:`carta_hub.usercontext.FIELDS`: ``{login}``,
``{username}``, percent-escaped so it is one safe path component, ``{uid}``, ``{gid}``,
``{home}``). They do not use KubeSpawner's slugs, so paths stay the same whatever
``slug_scheme`` is set. In-tree ``cephfs`` volumes (removed in Kubernetes 1.31) are never
generated.
"""

import posixpath
from dataclasses import dataclass

from traitlets import Dict, List, validate
from traitlets.config import LoggingConfigurable

from carta_hub import usercontext
from carta_hub.usercontext import SAMPLE, UserContext

KEYS = {"mount_path", "pvc", "host_path", "sub_path", "read_only", "hpc_path"}
TEMPLATE_KEYS = ("mount_path", "host_path", "sub_path", "hpc_path")


@dataclass(frozen=True)
class Mount:
    """One mount with its templates filled in."""

    mount_path: str
    pvc: str = ""
    host_path: str = ""
    sub_path: str = ""
    read_only: bool = False
    hpc_path: str = ""

    def bind(self) -> dict:
        """This mount as an Apptainer bind ``{source, target, read_only}``."""
        source = self.hpc_path or self.host_path or self.mount_path
        return {"source": source, "target": self.mount_path, "read_only": self.read_only}


class CartaStorage(LoggingConfigurable):
    """Volumes and binds for a user's CARTA server."""

    mounts = List(
        Dict(),
        help="""File trees to mount, each a dict with `mount_path` and one of `pvc` (an
        existing PersistentVolumeClaim, e.g. a static ceph-csi CephFS volume; optional
        `sub_path`) or `host_path` (CephFS mounted on the nodes); optional `read_only`,
        `hpc_path`. Paths are templates of the user fields ({login}, {username} (escaped),
        {uid}, {gid}, {home}). See carta_hub.hub.storage.""",
    ).tag(config=True, user_template=True)

    @validate("mounts")
    def _check_mounts(self, proposal):
        for entry in proposal["value"]:
            _check_entry(entry)
        return proposal["value"]

    def render(self, user: UserContext) -> list[Mount]:
        """The configured mounts for ``user``."""
        return [_render(entry, user.fields()) for entry in self.mounts]


def _check_entry(entry):
    unknown = set(entry) - KEYS
    if unknown:
        raise ValueError(
            f"CartaStorage.mounts: unknown keys {sorted(unknown)} in {entry}"
            " (in-tree cephfs volumes are not supported: use a ceph-csi PVC)"
        )
    if not entry.get("mount_path"):
        raise ValueError(f"CartaStorage.mounts: mount_path missing in {entry}")
    if bool(entry.get("pvc")) == bool(entry.get("host_path")):
        raise ValueError(f"CartaStorage.mounts: need exactly one of pvc, host_path in {entry}")
    if entry.get("sub_path") and not entry.get("pvc"):
        raise ValueError(f"CartaStorage.mounts: sub_path needs pvc in {entry}")
    _render(entry, SAMPLE.fields())


def _render(entry, fields):
    def filled(key):
        return usercontext.fill(str(entry.get(key) or ""), fields, f"c.CartaStorage.mounts {key}")

    return Mount(
        mount_path=_absolute(filled("mount_path")),
        pvc=entry.get("pvc", ""),
        host_path=_absolute(filled("host_path")) if entry.get("host_path") else "",
        sub_path=_relative(filled("sub_path")),
        read_only=bool(entry.get("read_only", False)),
        hpc_path=_absolute(filled("hpc_path")) if entry.get("hpc_path") else "",
    )


def _absolute(path):
    if not path.startswith("/") or ".." in path.split("/"):
        raise ValueError(f"storage path {path!r} must be absolute without '..'")
    return posixpath.normpath(path)


def _relative(path):
    if path.startswith("/") or ".." in path.split("/"):
        raise ValueError(f"sub_path {path!r} must be relative without '..'")
    return posixpath.normpath(path) if path else ""


def kube_volumes(mounts: list[Mount]) -> tuple[list[dict], list[dict]]:
    """Kubernetes ``(volumes, volumeMounts)`` for rendered ``mounts``; one volume per source."""
    volumes, volume_mounts, names = [], [], {}
    for mount in mounts:
        key = ("pvc", mount.pvc) if mount.pvc else ("host", mount.host_path)
        if key not in names:
            names[key] = f"carta-storage-{len(names)}"
            volumes.append(_volume(names[key], mount))
        vm = {"name": names[key], "mountPath": mount.mount_path, "readOnly": mount.read_only}
        if mount.sub_path:
            vm["subPath"] = mount.sub_path
        volume_mounts.append(vm)
    return volumes, volume_mounts


def _volume(name, mount):
    if mount.pvc:
        return {"name": name, "persistentVolumeClaim": {"claimName": mount.pvc}}
    return {"name": name, "hostPath": {"path": mount.host_path, "type": "Directory"}}


def binds(mounts: list[Mount]) -> list[dict]:
    """Apptainer binds ``[{source, target, read_only}]`` for rendered ``mounts``."""
    return [m.bind() for m in mounts]
