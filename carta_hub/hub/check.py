"""``carta-hub check``: what would break a user's next CARTA spawn, each problem with its fix.

Run it on the Hub's host, as the Hub's user, with the Hub's environment and configuration
(like ``carta-controller --test USER``)::

    carta-hub check -f /etc/carta-hub/slurm-pam.py alice

It loads the configuration and, for each user, resolves the POSIX identity
(:class:`carta_hub.hub.identity.IdentityResolver`, with the auth_state stored in the Hub
database), then checks what the spawner will need: for Slurm the sudo rule (``sbatch``,
``scancel``, ``tail`` as the user), ``squeue``, the partitions, the image, home, log folder and
bind sources; for Kubernetes the volume claims; the backend and folders for servers started
on this host. It also checks the installed jupyter-server-proxy and the idle culler's scopes,
and, when CARTASlurmSpawner talks to Slurm through slurmrestd (no sudo, no Slurm commands),
the JWT key, slurmrestd, the API version and a token Slurm accepts, instead of sudo and squeue.
Exit status 1 when a problem was found, 0 otherwise (warnings do not count).
"""

import os
import posixpath
import pwd
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

import yaml
from packaging.version import Version
from traitlets.config import PyFileConfigLoader

from carta_hub.backend import BackendNotFound, CartaBackend
from carta_hub.hub.identity import Identity, IdentityError, IdentityResolver
from carta_hub.hub.slurm.jobscript import log_file
from carta_hub.hub.storage import CartaStorage, binds
from carta_hub.usercontext import TemplateError, UserContext

if TYPE_CHECKING:
    from jupyterhub.app import JupyterHub

# (first fixed version, advisory) of jupyter-server-proxy
PROXY_ADVISORIES = [
    (Version("4.1.1"), "CVE-2024-28179 (websockets proxied without authentication)"),
    (Version("4.2.0"), "CVE-2024-35225 (reflected XSS in /proxy)"),
]
# its standalone mode (4.5; carta-hub-singleuser) and a callable update_last_activity (4.6)
PROXY_MIN = Version("4.6")
CULLER_SCOPES = {"list:users", "read:users:activity", "read:servers", "delete:servers"}
CULLER_MODULES = ("jupyterhub_idle_culler", "jupyterhub-idle-culler", "cull_idle_servers")
SLURM_COMMANDS = ("sbatch", "scancel", "tail")  # what the spawner runs as the user
LABELS = {"ok": "ok", "warning": "WARNING", "problem": "PROBLEM"}


@dataclass(frozen=True)
class Finding:
    level: str  # "ok", "warning" or "problem"
    text: str
    fix: str = ""


def ok(text: str) -> Finding:
    return Finding("ok", text)


def warning(text: str, fix: str = "") -> Finding:
    return Finding("warning", text, fix)


def problem(text: str, fix: str = "") -> Finding:
    return Finding("problem", text, fix)


class CheckUser:
    """The parts of a JupyterHub user that the identity resolver and spawners use."""

    def __init__(self, name, auth_state=None):
        self.name = name
        self.id = 0
        self.url = f"/user/{name}/"
        self.spawners = {}
        self._auth_state = auth_state

    async def get_auth_state(self) -> dict | None:
        return self._auth_state


# --- the Hub's configuration ---


def load_hub(path: str) -> "JupyterHub":
    """The Hub application configured from ``path`` (not started)."""
    from jupyterhub.app import JupyterHub

    folder, name = os.path.split(os.path.abspath(path))
    config = PyFileConfigLoader(name, path=folder).load_config()
    return JupyterHub(config=config)


async def stored_auth_state(hub: "JupyterHub", name: str) -> dict | None:
    """``name``'s decrypted auth_state from the Hub database, or None if there is none."""
    from jupyterhub import crypto, orm
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    db_url = hub.db_url
    if db_url.startswith("sqlite:///") and not os.path.exists(db_url[len("sqlite:///") :]):
        return None
    with Session(create_engine(db_url)) as session:
        user = session.query(orm.User).filter_by(name=name).one_or_none()
        encrypted = user.encrypted_auth_state if user else None
    if not encrypted:
        return None
    # keys from JUPYTERHUB_CRYPT_KEY or c.CryptKeeper.keys (the z2jh chart)
    return await crypto.CryptKeeper.instance(config=hub.config).decrypt(encrypted)


# --- checks of the whole Hub ---


def proxy_findings(installed: str | None = None) -> list[Finding]:
    """The jupyter-server-proxy on this host against the advisories and carta-hub's needs."""
    try:
        installed = installed or version("jupyter-server-proxy")
    except PackageNotFoundError:
        return [
            problem(
                "jupyter-server-proxy is not installed",
                f"pip install 'jupyter-server-proxy>={PROXY_MIN}'",
            )
        ]
    fix = f"pip install --upgrade 'jupyter-server-proxy>={PROXY_MIN}' (here and in the image)"
    found = [
        problem(f"jupyter-server-proxy {installed} is affected by {advisory}", fix)
        for fixed, advisory in PROXY_ADVISORIES
        if Version(installed) < fixed
    ]
    if Version(installed) < PROXY_MIN:
        found.append(
            problem(
                f"jupyter-server-proxy {installed} is older than {PROXY_MIN}, "
                "which carta-hub needs (its standalone mode, a callable "
                "update_last_activity)",
                fix,
            )
        )
    return found or [ok(f"jupyter-server-proxy {installed}")]


def culler_findings(hub: "JupyterHub") -> list[Finding]:
    """The idle culler service holds exactly the scopes it needs."""
    cullers = [s for s in hub.services if _is_culler(s)]
    if not cullers:
        return [
            warning(
                "no idle culler service: servers nobody uses keep their job or pod",
                "load_subconfig('culling.py') (docs/idle-culling.md), or the chart's cull.enabled",
            )
        ]
    return [_culler_finding(hub, service) for service in cullers]


def _is_culler(service):
    command = " ".join(map(str, service.get("command") or []))
    return any(name in command for name in CULLER_MODULES)


def _culler_finding(hub, service):
    name = service["name"]
    roles = [r for r in hub.load_roles if name in r.get("services", [])]
    scopes = {s for r in roles for s in r.get("scopes", [])}
    admin = sorted(s for s in scopes if s.startswith("admin"))
    if service.get("admin") or any(r.get("name") == "admin" for r in roles):
        admin.append("the admin role")
    least = ", ".join(sorted(CULLER_SCOPES))
    missing = CULLER_SCOPES - scopes
    if missing and not admin:
        return problem(
            f"the idle culler {name!r} lacks the scopes {', '.join(sorted(missing))}"
            ": it cannot find or stop idle servers",
            f"give its role the scopes {least} (see culling.py)",
        )
    if admin:
        return warning(
            f"the idle culler {name!r} has admin rights ({', '.join(admin)}), more "
            "than it needs: its token could change any user or server",
            f"give it a role with only {least} (see culling.py)",
        )
    return ok(f"idle culler {name!r} with scopes {least}")


# --- checks of one user ---


async def identity_findings(
    hub: "JupyterHub", username: str
) -> tuple[Identity | None, list[Finding]]:
    """The user's identity (or None) and what was found resolving it."""
    resolver = IdentityResolver(config=hub.config)
    found, auth_state = [], None
    if "auth_state" in resolver.sources:
        try:
            auth_state = await stored_auth_state(hub, username)
        except Exception as e:  # an unreadable database must not hide the other checks
            found.append(
                warning(
                    f"cannot read {username}'s auth_state from {hub.db_url}: {e}",
                    "run the check as the Hub's user, with its environment "
                    "(JUPYTERHUB_CRYPT_KEY) and working directory",
                )
            )
    try:
        ident = await resolver.resolve(CheckUser(username, auth_state))
    except (IdentityError, OSError, yaml.YAMLError) as e:  # what fails a spawn
        return None, found + [problem(str(e), _identity_fix(str(e)))]
    return ident, found + [
        ok(
            f"{username} runs as UID {ident.uid}, GID {ident.gid}, groups "
            f"{list(ident.groups)}, login {ident.name}, home {ident.home} "
            f"(from {ident.source})"
        )
    ]


def _identity_fix(message):
    if "allowed range" in message:
        return (
            "CARTA never runs as root or a system account: give the user an unprivileged "
            "UID/GID at its source (c.IdentityResolver.allowed_uids/allowed_gids decide "
            "what is acceptable)"
        )
    return (
        "the user must log in once (auth_state is stored at login), be listed in "
        "c.IdentityResolver.mapping_file, or be known to this host (sssd)"
    )


def template_findings(hub: "JupyterHub") -> list[Finding]:
    """Every user template (docs/identity-storage.md) uses only the user fields."""
    from carta_hub.hub.spawner import check_user_templates

    try:
        check_user_templates(hub.config)
    except TemplateError as e:
        return [problem(str(e), "correct the setting named")]
    return [ok("user templates use only the user fields")]


def host_findings(hub: "JupyterHub", user: UserContext, container: bool) -> list[Finding]:
    """Paths a server started for ``user`` needs; ``container``: inside an image."""
    mounts = CartaStorage(config=hub.config).render(user)
    found = [
        _path_finding(
            b["source"],
            f"bind source of {b['target']}",
            "c.CartaStorage.mounts (host_path/hpc_path)",
            directory=True,
        )
        for b in binds(mounts)
    ]
    if not container:
        found += backend_findings(CartaBackend(config=hub.config, user_context=user))
    return found


def backend_findings(backend: CartaBackend) -> list[Finding]:
    """carta_backend, its frontend and folders, when the server runs on a host like this."""
    try:
        executable = backend.resolve_executable()
        found = [ok(f"CARTA backend: {executable}")]
    except BackendNotFound as e:
        executable = None
        found = [problem(str(e), "install CARTA or set c.CartaBackend.executable")]
    if backend.frontend_folder:
        found.append(
            _path_finding(
                posixpath.join(backend.frontend_folder, "index.html"),
                "CARTA frontend",
                "c.CartaBackend.frontend_folder",
            )
        )
    elif executable:
        found.append(_default_frontend_finding(executable))
    if backend.top_level_folder:
        found.append(
            _path_finding(
                backend.setting("top_level_folder"),
                "CARTA top level folder",
                "c.CartaBackend.top_level_folder",
                directory=True,
            )
        )
    return found


def _default_frontend_finding(executable):
    """The frontend where carta_backend looks without --frontend_folder: beside its own
    resolved path (/proc/self/exe), ``<folder>/../share/carta/frontend`` (src/Main/Main.cc,
    main). Without index.html there it answers every page with 404."""
    folder = os.path.join(os.path.dirname(os.path.realpath(executable)), "../share/carta/frontend")
    index = os.path.join(folder, "index.html")
    if os.path.isfile(index) and os.access(index, os.R_OK):
        return ok(f"CARTA frontend (the backend's default): {folder}")
    return problem(
        f"CARTA frontend: the backend's default folder {folder} holds no readable "
        "index.html, so CARTA would answer every page with 404",
        "install the CARTA frontend there, or set c.CartaBackend.frontend_folder "
        "(with the Ubuntu PPA: /usr/share/carta/frontend)",
    )


def _path_finding(path, what, setting, directory=False):
    exists = os.path.isdir(path) if directory else os.path.isfile(path)
    if exists:
        return ok(f"{what}: {path}")
    return problem(
        f"{what}: {path} does not exist on this host", f"create it, or correct {setting}"
    )


# --- Slurm ---


def slurm_findings(hub: "JupyterHub", username: str, ident: Identity) -> list[Finding]:
    try:
        spawner = hub.spawner_class(config=hub.config, user=CheckUser(username))
    except Exception as e:  # operator values are validated here
        return [
            problem(
                f"the spawner refuses its settings: {e}",
                "correct the c.CARTASlurmSpawner settings named",
            )
        ]
    user = ident.context(username)
    fields = user.fields()
    job_name = spawner.fill_setting("job_name", fields)
    log_folder = posixpath.dirname(
        log_file(spawner.log_pattern(fields), "JOBID", ident.name, job_name)
    )
    found = [
        _path_finding(
            ident.home,
            f"home of {username} (the job's working folder)",
            "the user's home (c.IdentityResolver)",
            directory=True,
        ),
        _path_finding(
            log_folder, "folder of the job's log", "c.CARTASlurmSpawner.log_path", directory=True
        ),
    ]
    container = spawner.container_runtime != "none"
    if container:
        found.append(
            _path_finding(
                spawner.container_image, "container image", "c.CARTASlurmSpawner.container_image"
            )
        )
    found += host_findings(hub, user, container)
    if spawner.slurmrestd_url:  # no sudo, no Slurm commands: the Hub's section checks it
        return [_off_cluster(f) for f in found]
    found += sudo_findings(spawner, ident.name)
    return found + queue_findings(spawner, ident.name)


def _off_cluster(finding):
    """Through slurmrestd the Hub may run where the cluster's files are not (Kubernetes):
    a path missing here is a warning."""
    if finding.level != "problem":
        return finding
    return warning(
        f"{finding.text} (through slurmrestd the Hub may run off the cluster: check it on "
        "a compute node)",
        finding.fix,
    )


def sudo_findings(spawner, login: str) -> list[Finding]:
    """The spawner's exec_prefix (sudo) may run sbatch, scancel and tail as the user."""
    from batchspawner import format_template

    try:
        prefix = shlex.split(format_template(spawner.exec_prefix, username=login))
    except KeyError:
        prefix = []
    if prefix[:1] != ["sudo"]:
        return [warning(f"exec_prefix {spawner.exec_prefix!r}: sudo rights not checked")]
    options = [a for a in prefix[1:] if a != "-E"]  # sudo -l refuses -E
    refused = [c for c in SLURM_COMMANDS if _run(["sudo", "-n", "-l", *options, c]).returncode]
    why = "no sudo rule"
    if not refused and "-E" in prefix:  # batchspawner passes the job's environment
        errors = [
            line
            for line in _run(["sudo", "-n", *prefix[1:], "tail", "--version"]).stderr.splitlines()
            if line.startswith("sudo:")
        ]
        refused, why = (list(SLURM_COMMANDS) if errors else []), "; ".join(errors)
    if not refused:
        return [ok(f"{' '.join(prefix)} may run {', '.join(SLURM_COMMANDS)}")]
    return [
        problem(
            f"the Hub's user {_me()} cannot run {', '.join(refused)} as {login} through "
            f"sudo ({why})",
            _sudo_rule(),
        )
    ]


def _sudo_rule():
    paths = ", ".join(shutil.which(c) or f"/usr/bin/{c}" for c in SLURM_COMMANDS)
    return (
        "allow it for the students' group (visudo -f /etc/sudoers.d/carta-hub, see "
        f"docs/slurm.md):\n    Cmnd_Alias CARTA_SLURM = {paths}\n"
        f"    {_me()} ALL=(%carta-users) NOPASSWD:SETENV: CARTA_SLURM"
    )


def queue_findings(spawner, login: str) -> list[Finding]:
    """squeue answers for the user's jobs, and the offered partitions exist."""
    result = _run(shlex.split(spawner.squeue_command) + ["-h", "-o", "%i", "-u", login])
    if result.returncode:
        return [
            problem(
                f"{spawner.squeue_command} fails: {_last_line(result.stderr)}",
                "this host must reach slurmctld (SLURM_CONF, munge); or correct "
                "c.CARTASlurmSpawner.squeue_command",
            )
        ]
    existing = set(_run(["sinfo", "-h", "-o", "%R"]).stdout.split())
    return [ok(f"{spawner.squeue_command} answers")] + _partition_findings(spawner, existing)


def _partition_findings(spawner, existing):
    missing = [p for p in spawner.partitions if p not in existing]
    if not missing:
        return []
    return [
        problem(
            f"partitions {', '.join(missing)} offered to students do not exist"
            f" (the cluster has {', '.join(sorted(existing)) or 'none'})",
            "correct c.CARTASlurmSpawner.partitions",
        )
    ]


async def rest_findings(hub: "JupyterHub") -> list[Finding]:
    """CARTASlurmSpawner through slurmrestd (the same for every user): the JWT key readable,
    slurmrestd reachable, the API version it would use, a token for slurm_operator that Slurm
    accepts (the Hub's poll, ``GET .../jobs``), the partitions offered. Each failure is
    SlurmRest's message. Nothing for the sudo + Slurm commands path (each user's section)."""
    from carta_hub.hub.slurm.rest import SlurmRestError
    from carta_hub.hub.slurm.spawner import CARTASlurmSpawner

    if not issubclass(hub.spawner_class, CARTASlurmSpawner):
        return []
    try:
        spawner = hub.spawner_class(config=hub.config, user=CheckUser("carta-hub-check"))
    except Exception:  # each user's section reports the refused settings
        return []
    if not spawner.slurmrestd_url:
        return []
    try:
        spawner.check_transport()  # the key, and #SBATCH options slurmrestd can take
    except ValueError as e:
        return [problem(str(e), "correct the setting named (docs/slurm.md)")]
    rest, name = spawner.rest(), type(spawner).__name__
    found = [ok(f"Slurm JWT key readable: {spawner.jwt_key_file}")]
    try:
        api = await rest.version(rest.operator)
        found.append(ok(f"slurmrestd at {rest.url} answers; carta-hub uses its API {api}"))
        await rest.jobs()
        found.append(
            ok(f"Slurm accepts the Hub's token for {rest.operator} (c.{name}.slurm_operator)")
        )
        existing = {str(p.get("name")) for p in await rest.partitions()}
    except SlurmRestError as e:
        return found + [problem(str(e))]
    return found + _partition_findings(spawner, existing)


def _run(argv):
    try:
        return subprocess.run(
            argv, check=False, capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return subprocess.CompletedProcess(argv, 1, "", str(e))


def _last_line(text):
    return (text.strip().splitlines() or ["no output"])[-1]


def _me():
    return pwd.getpwuid(os.geteuid()).pw_name


# --- Kubernetes ---


async def kube_findings(hub: "JupyterHub", username: str, ident: Identity) -> list[Finding]:
    """The claims of c.CartaStorage.mounts exist and are bound, in the spawner's namespace."""
    from kubernetes_asyncio.client.rest import ApiException

    mounts = CartaStorage(config=hub.config).render(ident.context(username))
    claims = sorted({m.pvc for m in mounts if m.pvc})
    if not claims:
        return []
    try:
        spawner = hub.spawner_class(config=hub.config, user=CheckUser(username))
        return [await _claim_finding(spawner, claim) for claim in claims]
    except ApiException as e:
        return [
            problem(
                f"the Kubernetes API refuses to show claims: {e.status} {e.reason}",
                "give the Hub's service account get on persistentvolumeclaims",
            )
        ]
    except Exception as e:  # no cluster configuration, or the API cannot be reached
        return [
            problem(
                f"cannot reach the Kubernetes API: {e}",
                "run the check in the hub pod (kubectl exec deploy/hub -- ...)",
            )
        ]


async def _claim_finding(spawner, claim):
    from kubernetes_asyncio.client.rest import ApiException

    where = f"PersistentVolumeClaim {claim} in namespace {spawner.namespace}"
    try:
        pvc = await spawner.api.read_namespaced_persistent_volume_claim(claim, spawner.namespace)
    except ApiException as e:
        if e.status != 404:
            raise
        return problem(
            f"{where} does not exist",
            "create it (carta-hub cephfs-volume), or correct c.CartaStorage.mounts (pvc)",
        )
    if pvc.status.phase != "Bound":
        return problem(
            f"{where} is {pvc.status.phase}, not Bound: pods using it stay Pending",
            "kubectl describe pvc; check its PersistentVolume",
        )
    return ok(f"{where} is Bound")


# --- running it ---


async def user_findings(hub: "JupyterHub", username: str) -> list[Finding]:
    from carta_hub.hub.slurm.spawner import CARTASlurmSpawner
    from carta_hub.hub.spawner import CartaSpawnerMixin

    ident, found = await identity_findings(hub, username)
    if ident is None:
        return found
    if issubclass(hub.spawner_class, CARTASlurmSpawner):
        return found + slurm_findings(hub, username, ident)
    if not issubclass(hub.spawner_class, CartaSpawnerMixin):
        return found + [
            warning(
                f"{hub.spawner_class.__name__} is not a carta-hub spawner: "
                "only the identity was checked",
                "set c.JupyterHub.spawner_class (carta-slurm, carta-kube)",
            )
        ]
    if _in_pods(hub.spawner_class):
        return found + await kube_findings(hub, username, ident)  # images: the nodes' business
    return found + host_findings(hub, ident.context(username), container=False)


def _in_pods(cls):
    return any(base.__name__ == "KubeSpawner" for base in cls.__mro__)


async def run_checks(config_file: str, usernames: list[str]) -> dict[str, list[Finding]]:
    """``{section: [Finding]}`` for the Hub and for each user."""
    try:
        hub = load_hub(config_file)
        hub_class = hub.spawner_class
    except (Exception, SystemExit) as e:
        return {
            f"configuration {config_file}": [
                problem(f"it does not load: {e}", "correct it, or set the environment it reads")
            ]
        }
    templates = template_findings(hub)
    sections = {
        f"Hub ({config_file}, {hub_class.__name__})": proxy_findings()
        + culler_findings(hub)
        + templates
        + await rest_findings(hub)
    }
    if templates[0].level == "problem":  # every user's spawn would fail the same way
        return sections
    for name in usernames:
        sections[f"user {name}"] = await user_findings(hub, name)
    return sections


def report(sections: dict[str, list[Finding]]) -> int:
    """Print the findings; the number of problems."""
    for section, found in sections.items():
        print(section)
        for f in found:
            print(f"  [{LABELS[f.level]}] {f.text}")
            if f.fix:
                print("      fix: " + f.fix.replace("\n", "\n      "))
    levels = [f.level for found in sections.values() for f in found]
    problems, warnings = levels.count("problem"), levels.count("warning")
    print(f"{problems} problem(s), {warnings} warning(s)")
    return problems
