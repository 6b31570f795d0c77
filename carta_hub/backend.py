"""The one place that builds the ``carta_backend`` command line and environment.

Both spawners and both server modes (JupyterLab tile, CARTA-only) use :class:`CartaBackend`.
It is configured like any traitlets class, e.g. ``c.CartaBackend.top_level_folder = "/ceph"``
in ``jupyterhub_config.py`` (passed on to the user's server by the spawners, in
``$CARTA_HUB_SERVER_CONFIG``: :func:`server_environment`) or on the command line of
``carta-hub-singleuser``.
"""

import json
import math
import os
import secrets
import shutil
from collections.abc import Mapping

from traitlets import Bool, Dict, Instance, Int, List, Unicode, default, validate
from traitlets.config import Config, Configurable

from carta_hub import usercontext
from carta_hub.usercontext import UserContext

LOOPBACK = "127.0.0.1"
#: How the spawners pass the user's server its settings: JSON ``{"config": {section:
#: {setting: value}}, "user": {UserContext}}`` (a traitlets command line of lists and dicts
#: is deprecated, and it would show every setting in ``ps``). Nothing secret goes into it.
SERVER_CONFIG_ENV = "CARTA_HUB_SERVER_CONFIG"
#: The settings that are user templates (docs/identity-storage.md, Template fields)
FOLDER_TEMPLATES = ("top_level_folder", "starting_folder")


class JSONDict(Dict):
    """A Dict that also takes a JSON object on the command line."""

    def from_string_list(self, s_list):
        if len(s_list) == 1 and s_list[0].lstrip().startswith("{"):
            return json.loads(s_list[0])
        return super().from_string_list(s_list)


class BackendNotFound(RuntimeError):
    """``carta_backend`` (or the configured executable) cannot be run."""


class CartaBackend(Configurable):
    """How to run one user's ``carta_backend``."""

    executable = Unicode(
        "carta_backend",
        help="""Path or name (looked up on PATH) of the CARTA backend executable.
        With the Ubuntu PPA this is /usr/bin/carta_backend; the stand-in used by the demo
        and the tests is `carta-standin`.""",
    ).tag(config=True)

    frontend_folder = Unicode(
        "",
        help="""Folder holding the built CARTA frontend (index.html).
        Empty: the backend's own default (<exe>/../share/carta/frontend).""",
    ).tag(config=True)

    top_level_folder = Unicode(
        "",
        help="""Highest folder the user may browse in CARTA. Empty: the backend's default (/).
        A template: the user fields ({home}, {login}, {username}...) are replaced.""",
    ).tag(config=True, user_template=True)

    starting_folder = Unicode(
        "",
        help="""Folder the file browser opens in; must be inside top_level_folder.
        Empty: the backend's default. A template, as top_level_folder.""",
    ).tag(config=True, user_template=True)

    idle_timeout = Int(
        -1,
        help="""Seconds without user interaction (PINGs do not count) after which the backend
        drops the session. -1: off. With exit_timeout the backend then exits, and the
        CARTA-only server stops too.""",
    ).tag(config=True)

    exit_timeout = Int(
        -1,
        help="""Seconds the backend stays alive after its last client disconnected (a closed
        tab, or a session dropped by idle_timeout); then it exits, and the CARTA-only server
        stops. -1: off.""",
    ).tag(config=True)

    initial_timeout = Int(
        -1,
        help="Seconds the backend waits for a first client before exiting. -1: off.",
    ).tag(config=True)

    omp_threads = Int(
        0,
        min=-1,
        help="""OpenMP threads for the backend (--omp_threads). 0: as many as the session has
        CPUs: the Slurm job's ($SLURM_CPUS_PER_TASK, else $SLURM_CPUS_ON_NODE), else the
        server's CPU limit from JupyterHub ($CPU_LIMIT, else $CPU_GUARANTEE: KubeSpawner's
        cpu_limit and cpu_guarantee, e.g. from a profile) rounded up, else the CPUs the
        server may run on; never more than the CPUs it may run on. -1: the backend's own
        default, one thread per CPU of the node (carta_backend calls omp_get_num_procs and
        ignores $OMP_NUM_THREADS).""",
    ).tag(config=True)

    verbosity = Int(
        4,
        help="Backend log verbosity, 0 (none) to 5 (debug); 4 is info.",
    ).tag(config=True)

    write_log_file = Bool(
        False,
        help="""Let the backend write ~/.carta/log/carta.log as well. Off by default: the
        wrapper already captures the backend's output, and a full or read-only home must
        not stop CARTA.""",
    ).tag(config=True)

    enable_scripting = Bool(
        False,
        help="""Let students script their open CARTA from a notebook with carta-python
        (carta_backend's --enable_scripting: POST <CARTA URL>/api/scripting/action, which the
        backend passes to the student's open CARTA tab). Through carta-hub a script
        authenticates with the student's JupyterHub token, never the backend's; only the
        server's owner may use it. Off: such requests are answered 501 with a message.""",
    ).tag(config=True)

    extra_args = List(
        Unicode(),
        help="Further carta_backend arguments, appended as given (e.g. ['--read_only_mode']).",
    ).tag(config=True)

    preference_defaults = JSONDict(
        {"telemetryMode": "none", "telemetryConsentShown": True, "checkNewRelease": False},
        help="""Site defaults for CARTA preferences, used for every key a user has not saved
        themselves (their own choices always win). The defaults turn telemetry off without
        the first-start consent dialog and skip the new-release check, which need internet.
        Any other preference can be added, e.g. {"colormap": "inferno"}.""",
    ).tag(config=True)

    offline = Bool(
        False,
        help="""The students' browsers have no internet (or must not use it from CARTA).
        CARTA's pages then carry a Content-Security-Policy `connect-src 'self'`: the
        frontend's calls to outside hosts (the telemetry token, the new-release check, the
        HiPS survey list from alasky.cds.unistra.fr, catalogue and spectral-line queries) are
        refused inside the browser instead of failing or hanging on the network. CARTA's own
        connections (this server, its websocket) are unaffected.""",
    ).tag(config=True)

    warn_before_end = List(
        Int(min=1),
        [15 * 60, 5 * 60],
        help="""Seconds before the session ends (the Slurm job's wall time, or idle_timeout
        since the student last used CARTA) at which CARTA's tab shows a banner: at each, it
        comes back if the student closed it. Until the first, only a quiet time-left
        indicator shows. []: the indicator only.""",
    ).tag(config=True)

    autosave_before_end = Int(
        300,
        min=0,
        help="""Seconds before the session ends (the Slurm job's wall time, or idle_timeout
        since the student last used CARTA; for idle at most half of idle_timeout) at which
        the server saves each open CARTA tab as a workspace named autosave-<date>-<time>
        (in the student's ~/.carta/config/workspaces), once per end; the next session's
        tab then offers to restore it. Needs enable_scripting (the server asks the open tab
        to save itself, as a carta-python script would) and verbosity 4 or more (it finds
        the open tabs in CARTA's log). The tab's answer is a message to CARTA, which
        restarts CARTA's idle clock: an idle session saved this way lasts idle_timeout
        longer, once. 0: off.""",
    ).tag(config=True)

    start_timeout = Int(
        120,
        help="Seconds to wait for the backend to listen before giving up.",
    ).tag(config=True)

    user_context = Instance(
        UserContext,
        help="""The user whose fields the folder templates are filled with: the one the
        spawner passed in $CARTA_HUB_SERVER_CONFIG, else this process's own user.""",
    )

    @default("user_context")
    def _user_context_default(self):
        return server_user(os.environ) or UserContext.of_this_process()

    @validate(*FOLDER_TEMPLATES)
    def _known_fields(self, proposal):
        return usercontext.check(proposal.value, f"c.CartaBackend.{proposal.trait.name}")

    def resolve_executable(self):
        """Absolute path of the backend executable, or :class:`BackendNotFound`."""
        path = shutil.which(self.executable)
        if path is None:
            raise BackendNotFound(
                f"The CARTA backend {self.executable!r} was not found or is not executable. "
                "Install CARTA (e.g. from ppa:cartavis-team/carta) or point "
                "c.CartaBackend.executable at carta_backend."
            )
        return path

    def folder(self, template: str, setting: str = "a folder of c.CartaBackend") -> str:
        """A folder template filled with the fields of :attr:`user_context`."""
        return usercontext.fill(template, self.user_context.fields(), setting)

    def setting(self, name: str) -> str:
        """The folder setting ``name`` (one of :data:`FOLDER_TEMPLATES`), filled in."""
        return self.folder(getattr(self, name), f"c.CartaBackend.{name}")

    def command(self, port):
        """The backend's argument list for ``port``, always bound to loopback."""
        cmd = [
            self.resolve_executable(),
            "--host",
            LOOPBACK,
            "--port",
            str(port),
            "--no_browser",
            "--idle_timeout",
            str(self.idle_timeout),
            "--exit_timeout",
            str(self.exit_timeout),
            "--initial_timeout",
            str(self.initial_timeout),
            "--verbosity",
            str(self.verbosity),
            # /etc/carta/backend.json and ~/.carta/backend.json override every setting not
            # on this command line (src/Main/ProgramSettings.cc, ApplyJSONSettings), e.g.
            # http_url_prefix or no_frontend (CARTA then answers 404), or starting_folder
            # (even over the positional folder below); both flags exist since CARTA 3.0
            "--no_user_config",
            "--no_system_config",
        ]
        if not self.write_log_file:
            cmd.append("--no_log")
        threads = self.omp_threads or session_cpus(os.environ)
        if threads > 0:
            cmd += ["--omp_threads", str(threads)]
        if self.frontend_folder:
            cmd += ["--frontend_folder", self.frontend_folder]
        if self.top_level_folder:
            cmd += ["--top_level_folder", self.setting("top_level_folder")]
        if self.enable_scripting:
            # a flag (src/Main/ProgramSettings.cc, ApplyCommandLineSettings); main passes it
            # to HttpServer, whose RegisterRoutes serves /api/scripting/action with
            # HandleScriptingAction (else NotImplemented: 501), and Session::OnRegisterViewer
            # tells the frontend (ServerFeatureFlags SCRIPTING)
            cmd.append("--enable_scripting")
        cmd += list(self.extra_args)
        cmd.append(self.start_in())
        return cmd

    @property
    def scripting(self) -> bool:
        """Scripting is on: :attr:`enable_scripting`, or ``--enable_scripting`` in
        :attr:`extra_args` (as this setting's help suggested before enable_scripting)."""
        return self.enable_scripting or "--enable_scripting" in self.extra_args

    def start_in(self):
        """The starting folder: as configured, else home when it is under the top level
        (the backend exits when its working folder is outside), else the top level."""
        if self.starting_folder:
            return self.setting("starting_folder")
        home, top = self.user_context.home, self.setting("top_level_folder") or "/"
        # compared resolved, as carta_backend does (src/Util/Casacore.cc, CheckFolderPaths):
        # a home under a symlinked top level is inside, a symlink out of it is not
        real_home, real_top = os.path.realpath(home), os.path.realpath(top)
        inside = os.path.commonpath([real_home, real_top]) == real_top
        return home if inside else top

    def settings(self) -> dict:
        """The operator's settings (those not at their default), for the user's server."""
        return {
            name: getattr(self, name)
            for name in sorted(self.trait_names(config=True))
            if getattr(self, name) != self.trait_defaults(name)
        }

    @staticmethod
    def new_token():
        """A fresh random token, one per backend start."""
        return secrets.token_urlsafe(32)


#: Where the CPUs given to a session show, first found wins: the Slurm job's (its server runs
#: in the job), then JupyterHub's Spawner.get_env (cpu_limit, cpu_guarantee; KubeSpawner's pod).
CPU_VARIABLES = ("SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE", "CPU_LIMIT", "CPU_GUARANTEE")


def session_cpus(environ: Mapping[str, str]) -> int:
    """The CPUs this session was given (see :data:`CPU_VARIABLES`), at least 1 and at most
    those this process may run on.

    Without ``--omp_threads`` carta_backend starts one OpenMP thread per CPU of the node:
    ``ThreadManager::ApplyThreadLimit`` (src/ThreadingManager/ThreadingManager.cc) calls
    ``omp_set_num_threads(omp_get_num_procs())``, which overrides $OMP_NUM_THREADS; a pod
    limited by CPU quota (not by cpuset) still sees every CPU of the node there.
    """
    usable = len(os.sched_getaffinity(0))
    for name in CPU_VARIABLES:
        try:
            given = math.ceil(float(environ.get(name, "")))
        except (ValueError, OverflowError):
            continue
        if given > 0:
            return min(given, usable)
    return usable


def server_environment(config: Mapping[str, Mapping], user: UserContext | None) -> dict:
    """The environment that passes ``config`` (``{section: {setting: value}}``, e.g.
    ``{"CartaBackend": CartaBackend.settings()}``) and ``user`` to the user's server."""
    payload = {"config": {k: dict(v) for k, v in config.items() if v}}
    if user is not None:
        payload["user"] = user.as_dict()
    return {SERVER_CONFIG_ENV: json.dumps(payload, sort_keys=True)}


def _payload(environ: Mapping[str, str]) -> dict:
    text = environ.get(SERVER_CONFIG_ENV, "")
    try:
        payload = json.loads(text) if text else {}
    except ValueError as e:
        raise ValueError(
            f"${SERVER_CONFIG_ENV} is no JSON ({e}): it is written by the "
            "carta-hub spawners; unset it to start this server by hand"
        ) from None
    return payload if isinstance(payload, dict) else {}


def server_config(environ: Mapping[str, str]) -> Config:
    """The settings the spawner passed in ``$CARTA_HUB_SERVER_CONFIG`` (empty without)."""
    return Config(_payload(environ).get("config", {}))


def server_user(environ: Mapping[str, str]) -> UserContext | None:
    """The user the spawner passed in ``$CARTA_HUB_SERVER_CONFIG``, if any."""
    user = _payload(environ).get("user")
    return UserContext.from_dict(user) if user else None
