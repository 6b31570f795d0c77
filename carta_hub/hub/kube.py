"""``CARTAKubeSpawner``: KubeSpawner running each user's CARTA as the user's own POSIX identity.

Only wiring: :mod:`carta_hub.hub.identity` gives UID/GID/groups, :mod:`carta_hub.hub.storage`
gives the CephFS/hostPath mounts, :class:`carta_hub.hub.spawner.CartaSpawnerMixin` gives the
command and the ``CartaBackend`` settings, and ``profile_list`` chooses resources and CARTA-only
(``carta_mode: carta``, the default) vs JupyterLab mode. Everything else is
KubeSpawner's.

The pod is hardened: runAsUser/runAsGroup/supplementalGroups from the identity, runAsNonRoot,
no privilege escalation, all capabilities dropped, seccomp RuntimeDefault, a read-only root
filesystem (``/tmp`` is an emptyDir), ``fsGroup`` only when :attr:`fs_group` is set (with
``fsGroupChangePolicy: OnRootMismatch``). So that CARTA can resolve its own user and group
names (getpwuid), an init container writes passwd/group files for the identity into a
memory emptyDir and the notebook container loads them through ``nss_wrapper``
(``LD_PRELOAD``): this needs no write access to ``/etc`` and no root.

KubeSpawner builds the pod from its own settings (``uid``, ``gid``, ``fs_gid``,
``supplemental_gids``, ``pod_security_context``, ``container_security_context``, ``volumes``,
``volume_mounts``, ``init_containers``, ``working_dir``): for the build they hold the operator's
values combined with carta-hub's (:meth:`CARTAKubeSpawner.pod_settings`), and the operator's
again afterwards. Nothing edits the built pod. The rules (docs/kubernetes.md): the identity
comes from the user, never from ``uid``/``gid``/``fs_gid``; an operator's extra volumes,
mounts, init containers, supplemental groups and security-context keys are kept; a value that
would weaken one carta-hub sets refuses the spawn with :class:`PodSettingError`.
"""

import posixpath
import re

from jupyterhub.utils import maybe_future
from kubernetes_asyncio.client.models import V1Pod
from kubespawner import KubeSpawner
from traitlets import Bool, Dict, List, Unicode, default, validate

from carta_hub import __version__
from carta_hub.hub.spawner import CartaSpawnerMixin
from carta_hub.hub.storage import CartaStorage, kube_volumes

NSS_VOLUME = "carta-nss"
TMP_VOLUME = "carta-tmp"
HOME_VOLUME = "carta-home"
INIT_CONTAINER = "carta-nss"
CHART_IPTABLES = "block-cloud-metadata"
# Written by the init container from the two environment variables it is given.
NSS_SCRIPT = (
    'printf "%s" "$CARTA_PASSWD" > "$DIR/passwd" && printf "%s" "$CARTA_GROUP" > "$DIR/group"'
)

RESOURCE_CHOICES = {
    "small": {
        "display_name": "2 CPUs, 8 GB memory",
        "default": True,
        "kubespawner_override": {
            "cpu_guarantee": 0.5,
            "cpu_limit": 2.0,
            "mem_guarantee": "2G",
            "mem_limit": "8G",
        },
    },
    "large": {
        "display_name": "8 CPUs, 32 GB memory (large cubes)",
        "kubespawner_override": {
            "cpu_guarantee": 2.0,
            "cpu_limit": 8.0,
            "mem_guarantee": "8G",
            "mem_limit": "32G",
        },
    },
}

DEFAULT_PROFILES = [
    {
        "display_name": "CARTA",
        "slug": "carta",
        "description": "The CARTA viewer on its own.",
        "default": True,
        "kubespawner_override": {"carta_mode": "carta", "default_url": ""},
        "profile_options": {
            "resources": {"display_name": "Resources", "choices": RESOURCE_CHOICES}
        },
    },
    {
        "display_name": "JupyterLab with CARTA",
        "slug": "lab",
        "description": "JupyterLab; CARTA opens from the launcher's CARTA tile.",
        "kubespawner_override": {"carta_mode": "lab", "default_url": "/lab"},
        "profile_options": {
            "resources": {"display_name": "Resources", "choices": RESOURCE_CHOICES}
        },
    },
]


class PodSettingError(ValueError):
    """An operator's pod setting would weaken or replace carta-hub's; no pod is made and the
    message is shown on the spawn page."""


# Security-context keys an operator may set to another value than carta-hub's: when it is at
# least as strict. Any other key carta-hub sets must keep carta-hub's value.
STRICTER = {
    "seccompProfile": lambda theirs, ours: (
        (theirs or {}).get("type") in ("RuntimeDefault", "Localhost")
    ),
    "readOnlyRootFilesystem": lambda theirs, ours: theirs is True or not ours,
    "fsGroupChangePolicy": lambda theirs, ours: True,
}
HINTS = {
    "runAsUser": ", the user's UID",
    "runAsGroup": ", the user's primary GID",
    "readOnlyRootFilesystem": "; c.CARTAKubeSpawner.read_only_root_filesystem = False turns it off",
    "fsGroup": "; c.CARTAKubeSpawner.fs_group sets it",
}
# Values an operator's init container must not set in its own securityContext (else the pod's,
# carta-hub's, applies): they would run it as root or with more privileges.
UNSAFE_INIT = {
    "runAsUser": 0,
    "runAsNonRoot": False,
    "privileged": True,
    "allowPrivilegeEscalation": True,
}
# Keys of extra_pod_config / extra_container_config that would replace what carta-hub adds,
# with the setting that is combined with carta-hub's instead.
REPLACING = {
    "extra_pod_config": {
        "securityContext": "pod_security_context",
        "volumes": "volumes",
        "initContainers": "init_containers",
    },
    "extra_container_config": {
        "securityContext": "container_security_context",
        "volumeMounts": "volume_mounts",
    },
}


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
            extra = [
                {"profile_options": DEFAULT_PROFILES[0]["profile_options"], **p}
                for p in self.extra_profiles
            ]
            self.profile_list = [*(self.profile_list or DEFAULT_PROFILES), *extra]

    @validate("init_containers")
    def _no_root_iptables(self, proposal):
        # The chart's singleuser.cloudMetadata.blockWithIptables container runs as root, which
        # these runAsNonRoot pods refuse; the chart's NetworkPolicy blocks the metadata server.
        values = proposal.value
        if isinstance(values, dict):
            return {k: c for k, c in values.items() if _field(c, "name") != CHART_IPTABLES}
        return [c for c in values if _field(c, "name") != CHART_IPTABLES]

    @default("image")
    def _image_default(self):
        return f"carta-hub-singleuser:{__version__}"

    def get_env(self) -> dict:
        env = super().get_env()
        ident = self.carta_identity
        if ident is not None:
            env.update(HOME=ident.home, USER=ident.name, LOGNAME=ident.name)
            if self.nss_wrapper_library:
                env.update(
                    LD_PRELOAD=self.nss_wrapper_library,
                    NSS_WRAPPER_PASSWD=f"{self.nss_dir}/passwd",
                    NSS_WRAPPER_GROUP=f"{self.nss_dir}/group",
                )
        return env

    async def get_pod_manifest(self) -> V1Pod:
        """KubeSpawner's pod, built from :meth:`pod_settings`: run as the user's identity,
        with their storage, hardened, and with the operator's own additions.

        Raises :class:`carta_hub.hub.identity.IdentityError` when the user has no acceptable
        identity and :class:`PodSettingError` when an operator's setting conflicts with
        carta-hub's; then no pod is made.
        """
        self.carta_identity = await self.resolve_user()
        settings = await self.pod_settings()
        operators = {name: getattr(self, name) for name in settings}
        try:
            self._set_traits(settings)
            return await super().get_pod_manifest()
        finally:
            self._set_traits(operators)  # the next spawn combines from the operator's again

    async def pod_settings(self) -> dict:
        """The KubeSpawner settings this user's pod is built from: the operator's combined
        with carta-hub's identity, hardening, storage and nss init container."""
        self._check_replacing()
        self._note_unused_identity()
        ident = self.carta_identity
        psc = await self._pod_security()
        csc = await self._container_security(psc)
        volumes, mounts = self._volumes_and_mounts()
        theirs = _values(self.init_containers)
        for container in theirs:
            _check_init_container(container)
        init = [*self._nss_init_containers(csc), *theirs]
        _check_unique(init, "name", "init_containers")
        return {
            "uid": ident.uid,
            "gid": ident.gid,
            "fs_gid": ident.gid if self.fs_group else None,
            "supplemental_gids": psc["supplementalGroups"],
            "pod_security_context": psc,
            "container_security_context": csc,
            "volumes": volumes,
            "volume_mounts": mounts,
            "init_containers": init,
            "working_dir": self.working_dir or ident.home,
        }

    def _set_traits(self, values):
        for name, value in values.items():
            setattr(self, name, value)

    async def _operator(self, name):
        """The operator's value of KubeSpawner setting ``name`` (a callable's result)."""
        value = getattr(self, name)
        return await maybe_future(value(self)) if callable(value) else value

    def _check_replacing(self):
        for setting, replaced in REPLACING.items():
            for key in map(_camel, getattr(self, setting)):
                if key in replaced:
                    raise PodSettingError(
                        f"c.KubeSpawner.{setting} sets {key}, which would replace carta-hub's: "
                        f"use c.KubeSpawner.{replaced[key]} instead (combined with carta-hub's)"
                    )

    def _note_unused_identity(self):
        for name in ("uid", "gid", "fs_gid"):
            if getattr(self, name) is not None:
                self.log.info(
                    "c.KubeSpawner.%s is not used: %s's pod runs as their own identity%s",
                    name,
                    self.user.name,
                    " (c.CARTAKubeSpawner.fs_group sets fsGroup)" * (name == "fs_gid"),
                )

    async def _pod_security(self):
        ident = self.carta_identity
        extra = [int(g) for g in await self._operator("supplemental_gids") or []]
        ours = {
            "runAsUser": ident.uid,
            "runAsGroup": ident.gid,
            "runAsNonRoot": True,
            "supplementalGroups": _union(list(ident.groups), extra),
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        if self.fs_group:
            ours.update(fsGroup=ident.gid, fsGroupChangePolicy="OnRootMismatch")
        theirs = await self._operator("pod_security_context") or {}
        return combine_security(theirs, ours, "pod_security_context")

    async def _container_security(self, psc):
        for setting, key in (
            ("privileged", "privileged"),
            ("allow_privilege_escalation", "allowPrivilegeEscalation"),
        ):
            if getattr(self, setting):
                raise PodSettingError(_weaker(setting, key, True, False))
        ident = self.carta_identity
        ours = {
            "runAsUser": ident.uid,
            "runAsGroup": ident.gid,
            "runAsNonRoot": True,
            "privileged": False,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": psc["seccompProfile"],  # the pod's, maybe the operator's
            "readOnlyRootFilesystem": self.read_only_root_filesystem,
        }
        theirs = await self._operator("container_security_context") or {}
        return combine_security(theirs, ours, "container_security_context")

    def _volumes_and_mounts(self):
        """The operator's volumes and mounts, then carta-hub's: storage, scratch, nss files."""
        storage = CartaStorage(parent=self).render(self.carta_user)
        volumes, mounts = kube_volumes(storage)
        theirs = _values(self.volume_mounts)
        for volume, mount in self._scratch_volumes([*theirs, *mounts]) + self._nss_volumes():
            volumes.append(volume)
            mounts.append(mount)
        volumes, mounts = [*_values(self.volumes), *volumes], [*theirs, *mounts]
        _check_unique(volumes, "name", "volumes")
        _check_unique(mounts, "mountPath", "volume_mounts")
        return volumes, mounts

    def _scratch_volumes(self, mounts):
        """emptyDirs for /tmp, and for HOME when no mount holds it."""
        home = self.carta_identity.home
        paths = [_field(m, "mountPath") for m in mounts]
        wanted = [(TMP_VOLUME, "/tmp")]
        if not any(_under(home, path) for path in paths):
            self.log.warning(
                "No storage mount holds %s's HOME %s: using an emptyDir", self.user.name, home
            )
            wanted.append((HOME_VOLUME, home))
        return [
            ({"name": name, "emptyDir": {}}, {"name": name, "mountPath": path})
            for name, path in wanted
            if path not in paths
        ]

    def _nss_volumes(self):
        if not self.nss_wrapper_library:
            return []
        volume = {"name": NSS_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}
        return [(volume, {"name": NSS_VOLUME, "mountPath": self.nss_dir, "readOnly": True})]

    def _nss_init_containers(self, csc):
        """The init container writing passwd/group for nss_wrapper, as hardened as the
        notebook container."""
        if not self.nss_wrapper_library:
            return []
        ident = self.carta_identity
        container = {
            "name": INIT_CONTAINER,
            "image": self.image,
            "command": ["/bin/sh", "-c", NSS_SCRIPT],
            "env": [
                {"name": "DIR", "value": self.nss_dir},
                {"name": "CARTA_PASSWD", "value": ident.passwd_lines()},
                {"name": "CARTA_GROUP", "value": ident.group_lines()},
            ],
            "volumeMounts": [{"name": NSS_VOLUME, "mountPath": self.nss_dir}],
            "resources": {
                "requests": {"cpu": "10m", "memory": "16Mi"},
                "limits": {"cpu": "100m", "memory": "32Mi"},
            },
            "securityContext": csc,
        }
        if self.image_pull_policy:
            container["imagePullPolicy"] = self.image_pull_policy
        return [container]


def combine_security(theirs: dict, ours: dict, setting: str) -> dict:
    """An operator's security context ``theirs`` (``c.KubeSpawner.<setting>``) over
    carta-hub's ``ours``: the operator's other keys and stricter values are kept,
    supplementalGroups and dropped capabilities are united; a value that would weaken one of
    carta-hub's raises :class:`PodSettingError`."""
    combined = dict(ours)
    for key, value in theirs.items():
        if key == "supplementalGroups":
            value = _union(ours.get(key, []), [int(g) for g in value or []])
        elif key == "capabilities":
            value = _capabilities(value or {}, ours.get(key, {}), setting)
        elif key in ours and not _as_safe(key, value, ours[key]):
            raise PodSettingError(_weaker(setting, key, value, ours[key]))
        combined[key] = value
    return combined


def _as_safe(key, theirs, ours):
    return theirs == ours or STRICTER.get(key, lambda *_: False)(theirs, ours)


def _capabilities(theirs, ours, setting):
    if theirs.get("add"):
        raise PodSettingError(_weaker(setting, "capabilities.add", theirs["add"], []))
    return {**theirs, "drop": _union(ours.get("drop", []), theirs.get("drop") or [])}


def _check_init_container(container):
    """Refuse an operator's init container that asks for root or more privileges."""
    context = _field(container, "securityContext") or {}
    unsafe = [(key, value) for key, value in UNSAFE_INIT.items() if _field(context, key) == value]
    added = _field(_field(context, "capabilities") or {}, "add")
    unsafe += [("capabilities.add", added)] if added else []
    if unsafe:
        key, value = unsafe[0]
        raise PodSettingError(
            f"c.KubeSpawner.init_containers ({_field(container, 'name')}) sets {key}={value!r} "
            "in its securityContext, which would run it as root or with more privileges than "
            "the CARTA pod allows: remove it (also from any profile's kubespawner_override)"
        )


def _weaker(setting, key, value, ours):
    return (
        f"c.KubeSpawner.{setting} sets {key}={value!r}, which would weaken the CARTA pod's "
        f"hardening (carta-hub sets {ours!r}{HINTS.get(key, '')}): remove it (also from "
        "any profile's kubespawner_override)"
    )


def _check_unique(items, key, setting):
    seen = set()
    for item in items:
        value = _field(item, key)
        if value in seen:
            raise PodSettingError(
                f"{key} {value!r} appears twice in the pod (carta-hub adds its storage mounts, "
                f"/tmp, HOME and nss_dir, and volumes and init containers named carta-*): "
                f"change c.KubeSpawner.{setting}"
            )
        seen.add(value)


def _values(setting):
    """A KubeSpawner list-or-dict setting as a list (a dict's values in key order)."""
    if isinstance(setting, dict):
        return [setting[key] for key in sorted(setting)]
    return list(setting or [])


def _union(ours, theirs):
    return [*ours, *(item for item in theirs if item not in ours)]


def _camel(key):
    return re.sub(r"_([a-z])", lambda m: m[1].upper(), key)


def _field(obj, key):
    """``key`` (camelCase) of a Kubernetes object given as a dict or as a model."""
    if isinstance(obj, dict):
        return obj.get(key)
    return getattr(obj, re.sub(r"[A-Z]", lambda m: "_" + m[0].lower(), key), None)


def _under(path, root):
    return posixpath.commonpath([path, root]) == root
