"""CARTASlurmSpawner: each user's CARTA server as a Slurm batch job under their own identity.

Wiring only. batchspawner's SlurmSpawner submits and cancels (``sudo -E -u USER sbatch``);
:mod:`carta_hub.hub.slurm.form` validates the student's choices;
:mod:`carta_hub.hub.slurm.jobscript` renders the job script (Apptainer/Singularity or bare)
from ``batch_script`` or ``job_template``; :mod:`carta_hub.hub.slurm.squeue` answers every
status question from one ``squeue`` per poll interval shared by all servers of the Hub.
batchspawner settings this spawner never reads (:data:`UNUSED_SETTINGS`) are refused when
the Hub starts.
"""

import asyncio
import json
import math
import os
import re
import shlex
import time
from collections.abc import AsyncIterator

from batchspawner import JobStatus, SlurmSpawner, format_template
from jinja2 import Template, TemplateSyntaxError
from jupyterhub import apihandlers
from jupyterhub.apihandlers import APIHandler
from jupyterhub.utils import url_path_join
from tornado import web
from traitlets import Dict, Enum, Float, Int, List, Unicode, Union, default, validate
from traitlets.config import Config, Configurable

from carta_hub import usercontext
from carta_hub.hub.identity import IdentityError
from carta_hub.hub.slurm import extend, joblog
from carta_hub.hub.slurm.form import NAME_RE, FormError, ResourceFormMixin
from carta_hub.hub.slurm.jobscript import (
    compile_template,
    container_argv,
    load_template,
    log_file,
    sbatch_value,
    shell_log_file,
    template_variables,
)
from carta_hub.hub.slurm.rest import SlurmRest, SlurmRestError, sbatch_property
from carta_hub.hub.slurm.squeue import JobInfo, QueuePoller
from carta_hub.hub.spawner import CartaSpawnerMixin
from carta_hub.hub.storage import CartaStorage, binds

# What a job script template may read (docs/slurm.md lists them)
SCRIPT_VARIABLES = (
    "username",
    "login",
    "res",
    "job_name",
    "log_file",
    "workdir",
    "keepvars",
    "gres",
    "sbatch_options",
    "prologue",
    "epilogue",
    "srun",
    "container",
    "server",
    "command",
    "report_log",
)
_FORM = "use c.{cls}.%s (the choices on the spawn form) instead"
_SQUEUE = (
    "carta-hub reads every job's state from one squeue call: set "
    "c.{cls}.squeue_command to change that call"
)
_CLUSTER = (
    "sbatch, scancel and squeue use the cluster of the Hub's slurm.conf: set "
    "SLURM_CONF in the Hub's environment for another"
)
# batchspawner's settings that CARTASlurmSpawner inherits but never reads, and what to do
UNUSED_SETTINGS = {
    "req_partition": _FORM % "partitions",
    "req_queue": _FORM % "partitions",
    "req_nprocs": _FORM % "cores",
    "req_memory": _FORM % "memory_gb",
    "req_ngpus": _FORM % "gpus",
    "req_gres": _FORM % "gpus" + " (GPUs, named by gpu_gres), or c.{cls}.sbatch_options",
    "req_runtime": _FORM % "runtimes",
    "req_account": _FORM % "accounts",
    "req_qos": _FORM % "qos",
    "req_options": "use c.{cls}.sbatch_options instead (one #SBATCH option per item)",
    "req_reservation": "use c.{cls}.sbatch_options = ['--reservation=NAME'] instead",
    "req_host": _CLUSTER,
    "req_cluster": _CLUSTER,
    "batch_query_cmd": _SQUEUE,
    "state_pending_re": _SQUEUE,
    "state_running_re": _SQUEUE,
    "state_unknown_re": _SQUEUE,
    "state_exechost_re": _SQUEUE,
    "state_exechost_exp": _SQUEUE,
}


def unused_settings(cls: type, config: Config) -> list[str]:
    """A message for each batchspawner setting in ``config`` that ``cls`` never reads (set in
    its own section or in one of its bases', e.g. c.SlurmSpawner.req_runtime)."""
    sections = [k.__name__ for k in cls.__mro__ if issubclass(k, Configurable)]
    return [
        f"c.{section}.{name} has no effect on {cls.__name__}: " + hint.format(cls=cls.__name__)
        for section in sections
        if section in config
        for name, hint in UNUSED_SETTINGS.items()
        if name in config[section]
    ]


def check_script_template(text: str, setting: str) -> None:
    """ValueError unless ``text`` is a job script template carta-hub can render."""
    try:
        used = template_variables(text)
    except TemplateSyntaxError as e:
        raise ValueError(f"{setting} is no Jinja template: {e} (line {e.lineno})") from None
    unknown = sorted(used - set(SCRIPT_VARIABLES))
    if unknown:
        raise ValueError(
            f"{setting} reads {', '.join(unknown)}, which carta-hub's job script "
            f"does not have; it has {', '.join(SCRIPT_VARIABLES)}"
        )
    if not used & {"command", "server"}:
        raise ValueError(
            f"{setting} starts no server: it needs {{{{ command }}}} (or "
            "{{ server }} in your own command line)"
        )


class CARTASlurmSpawner(ResourceFormMixin, CartaSpawnerMixin, SlurmSpawner):
    """CARTA (or JupyterLab with a CARTA tile) as a Slurm job, optionally in Apptainer."""

    job_template = Unicode(
        "",
        help="""Jinja template file of the job script, read at each spawn. Empty: the
        packaged carta_hub/hub/slurm/job.sh.j2 (copy it to start your own). Set this or
        batch_script, not both.""",
    ).tag(config=True)

    batch_script = Unicode(
        "",
        help="""The job script as Jinja template text (batchspawner's setting; the variables
        are carta-hub's, listed in docs/slurm.md, e.g. {{ command }}, not {{ cmd }}). Empty:
        the file job_template names. Set this or job_template, not both.""",
    ).tag(config=True)

    job_name = Unicode(
        "carta", help="Slurm job name. A template of the user fields ({login}, {username}...)."
    ).tag(config=True, user_template=True)

    log_path = Unicode(
        "{home}/.carta-hub-slurm-%j.log",
        help="""The job's log, on a file system the Hub can read as the user: its tail is
        shown when a job fails. A template of the user fields ({home}, {login}, {uid}...);
        Slurm's %j, %u, %x are replaced too. Its folder must exist and be writable only by
        the user (as a home is). A job that cannot write it (read-only or full home) still
        starts, and keeps its log on the node in a new private folder, $TMPDIR or
        /tmp/carta-hub-<job id>.XXXXXXXXXX/job.log (its first lines name it).""",
    ).tag(config=True, user_template=True)

    container_runtime = Enum(
        ["apptainer", "singularity", "none"],
        default_value="apptainer",
        help="""Run the server in `apptainer exec` or `singularity exec` with
        container_image and the c.CartaStorage.mounts as binds, or bare on the node ('none').""",
    ).tag(config=True)

    container_image = Unicode(
        "", help="The image (e.g. /ceph/images/carta-hub.sif) holding CARTA and carta-hub."
    ).tag(config=True)

    container_args = List(
        Unicode(),
        help="Extra arguments for `apptainer exec` before the image, e.g. ['--cleanenv'].",
    ).tag(config=True)

    gpu_gres = Unicode("gpu", help="GRES name GPUs are requested with: --gres=<gpu_gres>:N.").tag(
        config=True
    )

    sbatch_options = List(
        Unicode(),
        help="Extra #SBATCH arguments, e.g. ['--constraint=carta', '--reservation=teaching'].",
    ).tag(config=True)

    squeue_command = Unicode(
        "squeue",
        help="""squeue as the Hub runs it for all jobs at once (not through sudo): the Hub's
        user must see every user's jobs (no PrivateData=jobs for it).""",
    ).tag(config=True)

    slurmrestd_url = Unicode(
        "",
        help="""Submit, list and cancel jobs through slurmrestd at this URL (e.g.
        http://slurm-rest.example.org:6820), with tokens the Hub signs with jwt_key_file:
        the Hub then needs no sudo rule, munge or Slurm commands. Empty: sbatch, scancel
        and squeue through sudo (docs/slurm.md).""",
    ).tag(config=True)

    jwt_key_file = Unicode(
        "",
        help="""The cluster's HS256 JWT key (slurm.conf AuthAltParameters=jwt_key), a copy
        readable only by the Hub's account: the Hub signs short-lived tokens for the
        student it acts for (never root) and for slurm_operator. Needs slurmrestd_url.""",
    ).tag(config=True)

    jwt_lifetime = Int(
        60,
        min=10,
        help="""Seconds a token the Hub signs stays valid. The Hub's and slurmctld's clocks
        must agree to well within it.""",
    ).tag(config=True)

    log_tail_lines = Int(
        30, help="Lines of the job's log shown to the student when the job dies early."
    ).tag(config=True)

    startup_poll_interval = Float(
        1.0,
        help="""Seconds between squeue calls while a job starts or stops (one call for all
        jobs). Otherwise squeue runs once per poll_interval.""",
    ).tag(config=True)

    extend_step = Union(
        [Int(min=0), Dict(value_trait=Int(min=0))],
        default_value=0,
        help="""Minutes a student may add to a running session's wall time at a time (the
        "Extend" button in the CARTA tab; the Hub raises the job's time limit as
        slurm_operator). 0: no extending. Per partition: {"interactive": 60, "*": 0} ("*":
        the other partitions and the cluster's default one).""",
    ).tag(config=True)

    max_runtime = Union(
        [Int(min=0), Dict(value_trait=Int(min=0))],
        default_value=0,
        help="""The longest wall time, in minutes, a session may reach by extending (its
        first wall time included). 0: up to the partition's MaxTime, which is never
        exceeded either. Per partition like extend_step: {"interactive": 480, "*": 240}.""",
    ).tag(config=True)

    slurm_operator = Unicode(
        "slurm",
        help="""The Slurm account the Hub raises time limits as (SlurmUser or a Slurm
        operator; a student cannot raise their own): `sudo -n -u <slurm_operator> scontrol
        update JobId=<id> TimeLimit=<minutes>` (the sudo rule in docs/slurm.md), or with
        slurmrestd_url a token for it (no sudo rule), which also reads partitions' MaxTime
        and lists all jobs. Never root.""",
    ).tag(config=True)

    connect_retry = 0.1  # seconds between connection attempts to a starting server

    @classmethod
    def check_hub(cls, app) -> None:
        """At Hub start, besides the user templates: these settings (a spawner is made from
        them) and the port-only handler in place of batchspawner's. An error stops the Hub."""
        super().check_hub(app)
        cls(config=app.config).check_transport()
        path = url_path_join(app.hub_prefix, "api/batchspawner")
        handler = _served_by(app, path)
        if handler is not PortOnlyHandler:
            raise RuntimeError(
                f"{path} would be served by {getattr(handler, '__name__', handler)}, not by "
                "carta-hub's PortOnlyHandler: batchspawner's handler lets a job's token set "
                "any attribute of its spawner, e.g. the commands the Hub runs. Install "
                "batchspawner 1.3 (pip install 'batchspawner~=1.3.0') and register no other "
                "handler there"
            )
        app.handlers[:0] = extend.handlers(app.hub_prefix)  # before the Hub's API 404
        app.handlers[:0] = joblog.handlers(app.hub_prefix)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._refuse_unused_settings()
        self._progress = []  # messages of the current start, in order
        self._progress_added = asyncio.Event()
        self._progress_done = False

    def _refuse_unused_settings(self) -> None:
        """Settings that would do nothing are errors (the Hub does not start with them)."""
        problems = unused_settings(type(self), self.config) + self._other_transport()
        if self.batch_script and self.job_template:
            name = type(self).__name__
            problems.append(
                f"c.{name}.batch_script and c.{name}.job_template are both set: "
                "keep one (batch_script holds the template, job_template names "
                "its file)"
            )
        if problems:
            raise ValueError("\n".join(problems))

    def _other_transport(self) -> list[str]:
        """The settings of the transport not in use (slurmrestd or sudo + commands)."""
        name = type(self).__name__
        if self.slurmrestd_url:
            unused = ["exec_prefix", "batch_submit_cmd", "batch_cancel_cmd", "squeue_command"]
            why = "the Hub talks to Slurm through slurmrestd (slurmrestd_url)"
        else:
            unused, why = ["jwt_key_file"], "it needs c.{name}.slurmrestd_url"
        sections = [k.__name__ for k in type(self).__mro__ if issubclass(k, Configurable)]
        return [
            f"c.{section}.{key} has no effect on {name}: " + why.format(name=name)
            for section in sections
            if section in self.config
            for key in unused
            if key in self.config[section]
        ]

    def check_transport(self) -> None:
        """slurmrestd's settings, at Hub start: a readable key, #SBATCH options it takes."""
        if not self.slurmrestd_url:
            return
        name = type(self).__name__
        if not self.jwt_key_file:
            raise ValueError(f"c.{name}.slurmrestd_url needs c.{name}.jwt_key_file")
        try:
            self.rest().headers(self.slurm_operator)
            for option in self.sbatch_options:
                sbatch_property(*(option.split("=", 1) + [""])[:2])
        except SlurmRestError as e:
            raise ValueError(f"c.{name}: {e}") from None

    def rest(self) -> SlurmRest:
        """slurmrestd, as this spawner's settings reach it."""
        return SlurmRest(
            self.slurmrestd_url, self.jwt_key_file, self.jwt_lifetime, self.slurm_operator
        )

    @validate("batch_script")
    def _known_variables(self, proposal):
        if proposal.value:
            check_script_template(proposal.value, f"c.{type(self).__name__}.batch_script")
        return proposal.value

    @validate("sbatch_options")
    def _one_line_each(self, proposal):
        for option in proposal.value:
            if "\n" in option or "\r" in option:
                raise ValueError(f"sbatch_options: {option!r} spans several lines")
        return proposal.value

    @validate("extend_step", "max_runtime")
    def _partition_names(self, proposal):
        value = proposal.value
        for name in value if isinstance(value, dict) else ():
            if name != extend.OTHER and not NAME_RE.fullmatch(name):
                raise ValueError(
                    f"{proposal.trait.name}: {name!r} is neither a partition name nor "
                    f"{extend.OTHER!r} (the other partitions)"
                )
        return value

    @validate("log_path")
    def _known_codes(self, proposal):
        log_file(proposal.value, "1", "login", "name")
        return usercontext.check(proposal.value, f"c.{type(self).__name__}.log_path")

    @validate("job_name")
    def _job_name_known_fields(self, proposal):
        return usercontext.check(proposal.value, f"c.{type(self).__name__}.job_name")

    @default("start_timeout")
    def _start_timeout(self):
        return 900  # queue waits count against it

    @default("poll_interval")
    def _poll_interval(self):
        return 30  # one squeue for all jobs per interval; a dead job is noticed sooner

    @default("options_form")
    def _form_default(self):
        return type(self)._options_form

    @default("options_from_form")
    def _from_form_default(self):
        return self._options_from_form

    @default("apply_user_options")
    def _apply_default(self):
        return type(self)._apply_options

    # --- form and validation ---

    async def _options_form(self):
        try:
            names = await self._names()
        except IdentityError as e:  # the spawn page shows it (not a bare 500)
            raise web.HTTPError(403, "%s", e) from None
        return self.render_form(names, self.user_options)

    async def _options_from_form(self, formdata):
        return (await self._resources(self.parse_form(formdata))).options()

    async def _apply_options(self, options):
        try:
            await self._resources(options)
        except (FormError, IdentityError) as e:
            raise web.HTTPError(400, str(e)) from e

    async def _names(self):
        """The user fields of this user's templates (carta_hub.usercontext.FIELDS)."""
        self._identity = await self.resolve_user()
        return self.carta_user.fields()

    async def _resources(self, options):
        return self.validate_resources(options or {}, await self._names())

    def get_req_subvars(self) -> dict:
        """batchspawner's values for its command templates, shell-quoted: exec_prefix
        (``sudo -E -u {username}``) and batch_submit_cmd/batch_cancel_cmd run in a shell."""
        return {
            key: shlex.quote(value) if isinstance(value, str) else value
            for key, value in super().get_req_subvars().items()
        }

    # --- the job script ---

    def get_env(self) -> dict:
        env = super().get_env()
        if os.environ.get("SLURM_CONF"):  # a non-default cluster config reaches sbatch and srun
            env["SLURM_CONF"] = os.environ["SLURM_CONF"]
        return env

    async def run_command(self, cmd: str, input: str | None = None, env: dict | None = None) -> str:
        """batchspawner's commands (sbatch, scancel, tail) under ``umask 077``: sudo keeps
        it, and sbatch hands it to the job, whose --output file Slurm creates with it."""
        return await super().run_command(f"umask 077; {cmd}", input=input, env=env)

    def server_argv(self) -> list[str]:
        """The single-user server's command line. The CARTA-only server reports its port to
        the Hub itself; JupyterLab's runs through batchspawner-singleuser."""
        argv = list(self.cmd) + self.get_args()
        if self.carta_mode == "lab" and self.batchspawner_singleuser_cmd:
            argv.insert(0, self.batchspawner_singleuser_cmd)
        return argv

    def carta_server_config(self) -> dict[str, dict]:
        """The CARTA-only server reports its port; the student's folder is where CARTA
        starts (validated by the form: no template fields)."""
        config = super().carta_server_config()
        if self.carta_mode == "carta":
            config["CartaSingleUserApp"] = {"report_port": True}
        folder = getattr(self, "_job", None) and self._job.folder
        if folder:
            config["CartaBackend"]["starting_folder"] = folder
        return config

    def cmd_formatted_for_batch(self) -> str:
        return shlex.join(self.server_argv())

    def job_script_template(self) -> Template:
        """batch_script if set, else the file job_template (empty: the packaged one)."""
        if self.batch_script:
            return compile_template(self.batch_script)
        return load_template(self.job_template)

    async def _get_batch_script(self, **subvars):
        """batchspawner's hook for the script it submits: carta-hub's variables, not
        batchspawner's ``req_*`` (only ``keepvars`` is taken from them)."""
        res, names = self._job, self._job_names
        storage = CartaStorage(parent=self).render(self.carta_user)
        srun = shlex.split(self.req_srun)
        container = container_argv(
            self.container_runtime,
            self.container_image,
            binds(storage),
            res.gpus,
            self.container_args,
        )
        server = self.server_argv()
        login, job_name = names["login"], self.fill_setting("job_name", names)
        return self.job_script_template().render(
            username=names["username"],
            login=login,
            res=res,
            job_name=sbatch_value("job_name", job_name),
            log_file=shell_log_file(self.log_pattern(names), login, job_name),
            workdir=sbatch_value("home directory", names["home"]),
            keepvars=sbatch_value("keepvars", subvars["keepvars"]),
            gres=f"{sbatch_value('gpu_gres', self.gpu_gres)}:{res.gpus}" if res.gpus else "",
            sbatch_options=self.sbatch_options,
            prologue=self.req_prologue,
            epilogue=self.req_epilogue,
            srun=srun,
            container=container,
            server=server,
            command=shlex.join(srun + container + server),
            report_log=joblog.report_command(self.log_tail_lines) if self.slurmrestd_url else "",
        )

    # --- slurmrestd instead of sudo + sbatch/scancel (batchspawner's hooks) ---

    async def submit_batch_script(self) -> str:
        if not self.slurmrestd_url:
            return await super().submit_batch_script()
        script = await self._get_batch_script(**self.get_req_subvars())
        self.log.info("Submitting %s's job through slurmrestd", self.req_username)
        try:
            self.job_id = await self.rest().submit(self.req_username, script, self.get_env())
        except SlurmRestError as e:
            raise RuntimeError(str(e)) from None
        self.log.info("Job %s of %s submitted", self.job_id, self.req_username)
        return self.job_id

    async def cancel_batch_job(self) -> None:
        if not self.slurmrestd_url:
            return await super().cancel_batch_job()
        self.log.info("Cancelling job %s of %s through slurmrestd", self.job_id, self.req_username)
        try:
            await self.rest().cancel(self.req_username, self.job_id)
        except SlurmRestError as e:
            raise RuntimeError(str(e)) from None

    def user_env(self, env: dict) -> dict:
        """USER and HOME of the resolved identity on the slurmrestd path (the Hub may not
        know the student's account, e.g. on Kubernetes); batchspawner's otherwise."""
        if not self.slurmrestd_url:
            return super().user_env(env)
        identity = getattr(self, "_identity", None)
        if identity:
            env.update(USER=identity.name, HOME=identity.home)
        return env

    # --- lifecycle ---

    async def start(self) -> tuple[str, int]:
        self._job_names = await self._names()
        self._job = self.validate_resources(self.user_options or {}, self._job_names)
        self.carta_mode = self._job.mode
        self.req_username, self.req_homedir = self._identity.name, self._identity.home
        self.port = 0
        if self.server:
            self.server.port = 0
        self._progress.clear()
        self._progress_done = False
        self.job_log = ""  # the end of the job's log, if it sends it (joblog)
        # give up a little before the Hub's start_timeout: the student then gets the job's
        # state and log tail, and the job is cancelled here, not a bare "timeout"
        started = time.monotonic()
        deadline = started + max(self.start_timeout - 5, self.start_timeout * 0.8)
        self._note("Submitting your CARTA job to Slurm")
        try:
            await self.submit_batch_script()
        except RuntimeError as e:
            raise SubmitError(f"Slurm refused the CARTA job: {e}") from None
        try:
            await asyncio.wait_for(self._until_ready(), deadline - time.monotonic())
        except asyncio.TimeoutError:
            raise RuntimeError(await self._gave_up(time.monotonic() - started)) from None
        self._note(f"CARTA is up on {self.ip}:{self.port}; connecting")
        self._progress_done = True
        self.db.commit()
        return self.ip, self.port

    async def _until_ready(self):
        info = await self._wait_for(self._running)
        self.ip = info.node
        # the job runs: look for the server now, not after one more squeue
        if not await self._listening(info):
            await self._wait_for(self._listening)

    async def _wait_for(self, done):
        """Fresh job states until ``await done(info)``; a job that ended raises, explained."""
        while True:
            info = await self._refresh(fresh=True)
            if info is None or info.status == JobStatus.NOTFOUND:
                raise RuntimeError(await self._why_ended(info))
            self._note(self._progress_message())
            if info.status != JobStatus.UNKNOWN and await done(info):
                return info

    async def _running(self, info):
        return info.status == JobStatus.RUNNING

    async def _listening(self, info):
        """The server reported its port (PortOnlyHandler) and accepts connections.

        Tried every ``connect_retry`` s until the next squeue is due, so that a server is
        seen ready within ~0.1 s of listening rather than within a startup_poll_interval
        (benchmarks/slurm_spawn.py)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.startup_poll_interval - self.connect_retry
        while not (self.port and await self._accepts()):
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(self.connect_retry)
        return True

    async def _accepts(self):
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(self.ip, self.port), 5)
        except (OSError, asyncio.TimeoutError):
            return False
        writer.close()
        return True

    def _queue(self):
        """The Hub's one squeue poller, shared by all servers (kept for clear_state)."""
        if self.slurmrestd_url:  # one GET .../jobs per interval
            self._poller = QueuePoller.shared(
                self.slurmrestd_url,
                self.log,
                self.poll_interval,
                self.startup_poll_interval,
                query=self.rest().query,
            )
            return self._poller
        self._poller = QueuePoller.shared(
            self.squeue_command, self.log, self.poll_interval, self.startup_poll_interval
        )
        return self._poller

    async def _refresh(self, fresh):
        info = await self._queue().status(self.job_id, fresh)
        self._info = info
        self.job_status = info.status_line if info else ""
        return info

    async def query_job_status(self) -> JobStatus:
        if not self.job_id:
            self.job_status = ""
            return JobStatus.NOTFOUND
        info = await self._refresh(fresh=True)
        return info.status if info else JobStatus.NOTFOUND

    async def poll(self) -> int | None:
        if self.job_id:
            info = await self._refresh(fresh=False)
            if info is not None and info.status == JobStatus.PENDING and self.pending != "spawn":
                # Slurm requeued the job of a started server (its node failed, an admin ran
                # `scontrol requeue`): that server is gone, and the job would come back later
                # on another port the Hub never routes. Cancel it: the student starts anew.
                self.log.warning(
                    "Job %s of %s was requeued (%s): cancelling it",
                    self.job_id,
                    self.user.name,
                    info.reason,
                )
                await self.cancel_batch_job()
            elif info is not None and info.status != JobStatus.NOTFOUND:
                return None
        self.clear_state()
        return 1

    def start_polling(self) -> None:
        """The Hub's periodic poll, and a poll as soon as the shared squeue sees the job end."""
        super().start_polling()
        if self.job_id:
            self._queue().notify_when_gone(self.job_id, self._job_gone)

    def _job_gone(self):
        if self.pending not in ("spawn", "stop"):
            asyncio.ensure_future(self.poll_and_notify())

    async def stop(self, now: bool = False) -> None:
        if self.job_id:
            await super().stop(now=now)

    def get_state(self) -> dict:
        state = super().get_state()
        if self.job_id:  # who to scancel as after a Hub restart (the login may differ)
            state["login"] = self.req_username
        return state

    def load_state(self, state: dict) -> None:
        super().load_state(state)
        if state.get("login"):
            self.req_username = state["login"]

    def clear_state(self) -> None:
        if self.job_id and getattr(self, "_poller", None):
            self._poller.forget(self.job_id)
        super().clear_state()

    # --- extending a running job (carta_hub.hub.slurm.extend) ---

    async def job_info(self, fresh: bool = True) -> JobInfo | None:
        """The job as Slurm lists it: from a new query if ``fresh``, else the last one's."""
        return await self._refresh(fresh) if self.job_id else None

    def job_partition(self) -> str:
        """The partition the student picked ("": the cluster's default one)."""
        return str((self.user_options or {}).get("partition") or "")

    async def partition_max_minutes(self, partition: str) -> int | None:
        """The MaxTime of ``partition`` ("": the default one) in minutes; None: unlimited.
        Through slurmrestd as slurm_operator, else ``scontrol`` as the Hub's user."""
        if self.slurmrestd_url:
            try:
                listed = extend.rest_partitions(await self.rest().partitions())
            except SlurmRestError as e:
                raise extend.ExtendError(
                    502, f"Could not read the partitions' MaxTime: {e}"
                ) from None
            return extend.partition_max_time(listed, partition)
        code, out = await extend.run(["scontrol", "-o", "show", "partition"])
        if code:
            raise extend.ExtendError(502, f"Could not read the partitions' MaxTime: {out}")
        return extend.partition_max_time(extend.scontrol_partitions(out), partition)

    async def set_time_limit(self, minutes: int) -> None:
        """Set the running job's time limit, as slurm_operator (students cannot raise it)."""
        if not re.fullmatch(r"[0-9]+", self.job_id or ""):
            raise extend.ExtendError(404, f"{self.job_id!r} is not a Slurm job id")
        if self.slurmrestd_url:
            try:
                return await self.rest().set_time_limit(self.job_id, minutes)
            except SlurmRestError as e:
                raise extend.ExtendError(409, f"Slurm refused the new time limit: {e}") from None
        code, out = await extend.run(
            ["sudo", "-n", "-u", self.slurm_operator, "scontrol", "update"]
            + [f"JobId={self.job_id}", f"TimeLimit={int(minutes)}"]
        )
        if code and out.startswith("sudo:"):
            raise extend.ExtendError(
                502,
                f"The Hub may not raise time limits as {self.slurm_operator} ({out}); "
                "the operator needs to add the sudo rule of docs/slurm.md",
            )
        if code:
            raise extend.ExtendError(409, f"Slurm refused the new time limit: {out}")

    # --- what the student sees ---

    async def progress(self) -> AsyncIterator[dict]:
        shown = 0
        while True:
            while shown < len(self._progress):
                yield {"message": self._progress[shown]}
                shown += 1
            if self._progress_done:
                return
            self._progress_added.clear()
            await self._progress_added.wait()

    def _note(self, message):
        if not self._progress or self._progress[-1] != message:
            self._progress.append(message)
            self._progress_added.set()

    def _progress_message(self):
        info = self._info
        if info is None or info.status == JobStatus.UNKNOWN:
            return f"Slurm job {self.job_id} submitted"
        if info.status == JobStatus.PENDING:
            why = f" (Slurm reason: {info.reason})" if info.reason not in ("", "None") else ""
            return f"Slurm job {self.job_id} is waiting in the queue{why}{_expected(info)}"
        return f"Slurm job {self.job_id} is running on node {info.node}; CARTA is starting"

    async def _why_ended(self, info):
        job_id, path = self.job_id, self._log_file()
        state = _describe(info)
        tail = await self._log_tail(path)
        self.clear_state()
        return (
            f"Your CARTA job {job_id} ended before CARTA was ready ({state}). "
            f"Last lines of its log {path}:\n{tail}"
        )

    async def _gave_up(self, waited):
        """Cancel a job that did not get CARTA ready in time; say why, with its log tail."""
        job_id, path, state = self.job_id, self._log_file(), _describe(self._info)
        self._note(f"CARTA was not ready after {waited:.0f} s: cancelling Slurm job {job_id}")
        try:
            await self.cancel_batch_job()
            cancelled = True
        except Exception as e:  # the Hub's own stop() tries again
            self.log.warning("Could not cancel job %s: %s", job_id, e)
            cancelled = False
        tail = await self._log_tail(path)
        if cancelled:
            self.clear_state()
        return (
            f"CARTA was not ready within {waited:.0f} s, so your CARTA job {job_id} was "
            f"cancelled ({state}). Last lines of its log {path}:\n{tail}"
        )

    def _log_file(self):
        names = self._job_names
        return log_file(
            self.log_pattern(names),
            self.job_id,
            names["login"],
            self.fill_setting("job_name", names),
        )

    def log_pattern(self, names: dict[str, str]) -> str:
        """log_path with the user fields filled in, Slurm's %-codes not yet: a '%' of a
        field (an escaped username) stays a '%'."""
        return self.fill_setting("log_path", {k: v.replace("%", "%%") for k, v in names.items()})

    async def _log_tail(self, path):
        """The end of the job's log, read as the user (batchspawner's exec_prefix), or on
        the slurmrestd path as the job sent it (joblog)."""
        if self.slurmrestd_url:
            lines = getattr(self, "job_log", "").splitlines()[-self.log_tail_lines :]
            return "\n".join(lines)[-4000:] or "(the job sent none: it did not reach the Hub)"
        prefix = format_template(self.exec_prefix, **self.get_req_subvars())
        cmd = f"{prefix} tail -n {self.log_tail_lines} -- {shlex.quote(path)}"
        try:
            out = await asyncio.wait_for(self.run_command(cmd, env=self.get_env()), 15)
        except Exception as e:  # a missing or unreadable log must not hide the job's state
            return f"(could not read it: {e})"
        return out[-4000:] or "(empty)"


def _expected(info):
    """Slurm's expected start of a pending job, in the Hub's time zone, if it has one."""
    if info.start_time is None or info.start_time <= time.time():
        return ""
    when = time.localtime(info.start_time)
    same_day = when[:3] == time.localtime()[:3]
    wait = math.ceil((info.start_time - time.time()) / 60)
    day = "" if same_day else time.strftime("%a %d %b ", when)
    return f"; expected to start {day}{time.strftime('%H:%M %Z', when)} (in {wait} min)"


def _describe(info):
    if info is None:
        return "Slurm no longer lists it"
    reason = f", reason {info.reason}" if info.reason not in ("", "None") else ""
    return f"Slurm state {info.state}{reason}"


class SubmitError(web.HTTPError, RuntimeError):
    """A job Slurm (or slurmrestd) did not take: its message on the spawn page, also when
    the spawn fails within the Hub's first second (JupyterHub shows an HTTPError's
    jupyterhub_message; any other exception as "Unhandled error")."""

    def __init__(self, message: str):
        super().__init__(503, "%s", message)
        self.jupyterhub_message = message

    def __str__(self):
        return self.jupyterhub_message


class PortOnlyHandler(APIHandler):
    """``POST /hub/api/batchspawner``: the server reports its port, nothing else.

    batchspawner's own handler sets ANY attribute the job posts on the spawner (its
    exec_prefix, its scancel command, ...), with the server's token, which the student can
    read in the job: a path to commands run by the Hub. This one accepts only the port.
    """

    @web.authenticated
    def post(self) -> None:
        data = self.get_json_body()
        port = data.get("port") if isinstance(data, dict) else None
        if set(data or {}) != {"port"} or type(port) is not int or not 0 < port < 65536:
            raise web.HTTPError(400, 'Only {"port": 1-65535} is accepted here.')
        token = self.get_auth_token()
        for spawner in self.current_user.spawners.values():
            if extend.is_server_token(spawner, token):
                spawner.port = port
                self.set_status(201)
                self.finish(json.dumps({"message": "port set"}))
                return
        raise web.HTTPError(404, "No server of yours uses this token.")


def _replace_batchspawner_handler() -> None:
    """Serve ``/hub/api/batchspawner`` with PortOnlyHandler instead of batchspawner's."""
    handlers = apihandlers.default_handlers
    for i, (pattern, *rest) in enumerate(handlers):
        if pattern == r"/api/batchspawner":
            handlers[i] = (pattern, PortOnlyHandler, *rest[1:])


def _served_by(app, path: str):
    """The handler class the Hub's tornado application would pick for ``path``."""
    for pattern, handler, *_ in app.handlers:
        if re.fullmatch(pattern, path):
            return handler
    return None


_replace_batchspawner_handler()
