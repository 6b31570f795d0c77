"""``CARTAKubeSpawner``: KubeSpawner running each user's CARTA as the user's own POSIX identity.

Only wiring: :mod:`carta_hub.hub.identity` gives UID/GID/groups, :mod:`carta_hub.hub.storage` gives the
CephFS/hostPath mounts, :class:`carta_hub.hub.spawner.CartaSpawnerMixin` gives the command and the
``CartaBackend`` arguments, and ``profile_list`` chooses resources and CARTA-only
(``carta_mode: carta``, the default) vs JupyterLab mode. Everything else is
KubeSpawner's.

The pod is hardened: runAsUser/runAsGroup/supplementalGroups from the identity, runAsNonRoot,
no privilege escalation, all capabilities dropped, seccomp RuntimeDefault, a read-only root
filesystem (``/tmp`` is an emptyDir), ``fsGroup`` only when :attr:`fs_group` is set (with
``fsGroupChangePolicy: OnRootMismatch``). So that CARTA can resolve its own user and group
names (getpwuid), an init container writes passwd/group files for the identity into a
memory emptyDir and the notebook container loads them through ``nss_wrapper``
(``LD_PRELOAD``): this needs no write access to ``/etc`` and no root.
"""

import posixpath

from kubernetes_asyncio.client.models import V1Container, V1Volume, V1VolumeMount
from kubespawner import KubeSpawner
from kubespawner.utils import get_k8s_model
from traitlets import Bool, Dict, List, Unicode, default, validate

from carta_hub import __version__
from carta_hub.hub.identity import IdentityResolver
from carta_hub.hub.spawner import CartaSpawnerMixin
from carta_hub.hub.storage import CartaStorage, kube_volumes

NSS_VOLUME = "carta-nss"
TMP_VOLUME = "carta-tmp"
HOME_VOLUME = "carta-home"
INIT_CONTAINER = "carta-nss"
CHART_IPTABLES = "block-cloud-metadata"
# Written by the init container from the two environment variables it is given.
NSS_SCRIPT = 'printf "%s" "$CARTA_PASSWD" > "$DIR/passwd" && printf "%s" "$CARTA_GROUP" > "$DIR/group"'

RESOURCE_CHOICES = {
    "small": {
        "display_name": "2 CPUs, 8 GB memory",
        "default": True,
        "kubespawner_override": {"cpu_guarantee": 0.5, "cpu_limit": 2.0,
                                 "mem_guarantee": "2G", "mem_limit": "8G"},
    },
    "large": {
        "display_name": "8 CPUs, 32 GB memory (large cubes)",
        "kubespawner_override": {"cpu_guarantee": 2.0, "cpu_limit": 8.0,
                                 "mem_guarantee": "8G", "mem_limit": "32G"},
    },
}

DEFAULT_PROFILES = [
    {
        "display_name": "CARTA",
        "slug": "carta",
        "description": "The CARTA viewer on its own.",
        "default": True,
        "kubespawner_override": {"carta_mode": "carta", "default_url": ""},
        "profile_options": {"resources": {"display_name": "Resources",
                                          "choices": RESOURCE_CHOICES}},
    },
    {
        "display_name": "JupyterLab with CARTA",
        "slug": "lab",
        "description": "JupyterLab; CARTA opens from the launcher's CARTA tile.",
        "kubespawner_override": {"carta_mode": "lab", "default_url": "/lab"},
        "profile_options": {"resources": {"display_name": "Resources",
                                          "choices": RESOURCE_CHOICES}},
    },
]


class CARTAKubeSpawner(CartaSpawnerMixin, KubeSpawner):
    """KubeSpawner for CARTA: per-user identity, CephFS mounts, hardened pods, profiles."""

    fs_group = Bool(
        False,
        help="""Set the pod's fsGroup to the user's primary GID (with fsGroupChangePolicy
        OnRootMismatch). Off by default: on CephFS a recursive ownership change of a large
        tree takes hours, and POSIX permissions already apply as on the HPC cluster.""",
    ).tag(config=True)

    read_only_root_filesystem = Bool(
        True,
        help="""Mount the image read-only. /tmp (and HOME when no storage mount holds it)
        are emptyDirs.""",
    ).tag(config=True)

    nss_wrapper_library = Unicode(
        "/usr/lib/x86_64-linux-gnu/libnss_wrapper.so",
        help="""nss_wrapper library in the single-user image (Ubuntu package libnss-wrapper;
        use the aarch64-linux-gnu path on arm64). Empty: do not preload it (the image must
        then know the user some other way, e.g. sssd).""",
    ).tag(config=True)

    nss_dir = Unicode(
        "/run/carta-hub",
        help="Directory (a memory emptyDir) for the generated passwd and group files.",
    ).tag(config=True)

    carta_identity = None
    # the hub pod's own passwd/group are not the site's: never an identity source here
    identity_sources = ("auth_state", "mapping")

    extra_profiles = List(
        Dict(),
        help="""Profiles offered after the profile_list (by default carta-hub's "CARTA" and
        "JupyterLab with CARTA"), e.g. a GPU profile; those without profile_options get
        the Resources choice of the default profiles.""",
    ).tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # an empty profile_list (the z2jh chart's default singleuser.profileList) means ours
        if not callable(self.profile_list):
            extra = [{"profile_options": DEFAULT_PROFILES[0]["profile_options"], **p}
                     for p in self.extra_profiles]
            self.profile_list = [*(self.profile_list or DEFAULT_PROFILES), *extra]

    @validate("init_containers")
    def _no_root_iptables(self, proposal):
        # The chart's singleuser.cloudMetadata.blockWithIptables container runs as root, which
        # these runAsNonRoot pods refuse; the chart's NetworkPolicy blocks the metadata server.
        return [c for c in proposal.value if _name(c) != CHART_IPTABLES]

    @default("image")
    def _image_default(self):
        return f"carta-hub-singleuser:{__version__}"

    def get_env(self):
        env = super().get_env()
        ident = self.carta_identity
        if ident is not None:
            env.update(HOME=ident.home, USER=ident.name, LOGNAME=ident.name)
            if self.nss_wrapper_library:
                env.update(LD_PRELOAD=self.nss_wrapper_library,
                           NSS_WRAPPER_PASSWD=f"{self.nss_dir}/passwd",
                           NSS_WRAPPER_GROUP=f"{self.nss_dir}/group")
        return env

    async def get_pod_manifest(self):
        """KubeSpawner's pod, run as the user's identity with their storage.

        Raises :class:`carta_hub.hub.identity.IdentityError` (and so creates no pod) when the
        user has no acceptable identity.
        """
        self.carta_identity = await IdentityResolver(parent=self).resolve(self.user)
        pod = await super().get_pod_manifest()
        mounts = CartaStorage(parent=self).render(self.carta_identity, self.user.name)
        self._add_volumes(pod, *kube_volumes(mounts))
        self._secure(pod)
        return pod

    def _notebook(self, pod):
        return next(c for c in pod.spec.containers if c.name == "notebook")

    def _add_volumes(self, pod, volumes, mounts):
        for volume, mount in self._scratch_volumes(mounts) + self._nss_volumes():
            volumes.append(volume)
            mounts.append(mount)
        if self.nss_wrapper_library:
            init = get_k8s_model(V1Container, self._nss_init_container())
            pod.spec.init_containers = [init, *(pod.spec.init_containers or [])]
        pod.spec.volumes = [*(pod.spec.volumes or []),
                            *(get_k8s_model(V1Volume, v) for v in volumes)]
        notebook = self._notebook(pod)
        notebook.volume_mounts = [*(notebook.volume_mounts or []),
                                  *(get_k8s_model(V1VolumeMount, m) for m in mounts)]
        notebook.working_dir = notebook.working_dir or self.carta_identity.home

    def _scratch_volumes(self, mounts):
        """emptyDirs for /tmp, and for HOME when no storage mount holds it."""
        home = self.carta_identity.home
        wanted = [(TMP_VOLUME, "/tmp")]
        if not any(_under(home, m["mountPath"]) for m in mounts):
            self.log.warning("No storage mount holds %s's HOME %s: using an emptyDir",
                             self.user.name, home)
            wanted.append((HOME_VOLUME, home))
        return [({"name": name, "emptyDir": {}}, {"name": name, "mountPath": path})
                for name, path in wanted if all(m["mountPath"] != path for m in mounts)]

    def _nss_volumes(self):
        if not self.nss_wrapper_library:
            return []
        volume = {"name": NSS_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}
        return [(volume, {"name": NSS_VOLUME, "mountPath": self.nss_dir, "readOnly": True})]

    def _nss_init_container(self):
        ident = self.carta_identity
        container = {
            "name": INIT_CONTAINER,
            "image": self.image,
            "command": ["/bin/sh", "-c", NSS_SCRIPT],
            "env": [{"name": "DIR", "value": self.nss_dir},
                    {"name": "CARTA_PASSWD", "value": ident.passwd_lines()},
                    {"name": "CARTA_GROUP", "value": ident.group_lines()}],
            "volumeMounts": [{"name": NSS_VOLUME, "mountPath": self.nss_dir}],
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"},
                          "limits": {"cpu": "100m", "memory": "32Mi"}},
        }
        if self.image_pull_policy:
            container["imagePullPolicy"] = self.image_pull_policy
        return container

    def _secure(self, pod):
        ident = self.carta_identity
        psc = {k: v for k, v in (pod.spec.security_context or {}).items()
               if k not in ("fsGroup", "fsGroupChangePolicy")}
        psc.update(runAsUser=ident.uid, runAsGroup=ident.gid, runAsNonRoot=True,
                   supplementalGroups=list(ident.groups),
                   seccompProfile={"type": "RuntimeDefault"})
        if self.fs_group:
            psc.update(fsGroup=ident.gid, fsGroupChangePolicy="OnRootMismatch")
        pod.spec.security_context = psc
        for container in self._own_containers(pod):
            container.security_context = {**(container.security_context or {}),
                                          **self._container_security()}

    def _container_security(self):
        ident = self.carta_identity
        return {"runAsUser": ident.uid, "runAsGroup": ident.gid, "runAsNonRoot": True,
                "privileged": False, "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"},
                "readOnlyRootFilesystem": self.read_only_root_filesystem}

    def _own_containers(self, pod):
        """The notebook container and our init container."""
        yield self._notebook(pod)
        for container in pod.spec.init_containers or []:
            if container.name == INIT_CONTAINER:
                yield container


def _name(container):
    return container.get("name") if isinstance(container, dict) else container.name


def _under(path, root):
    return posixpath.commonpath([path, root]) == root

