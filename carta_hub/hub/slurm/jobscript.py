"""The Slurm job script: a Jinja template (packaged, or the operator's file), the container
command around the single-user server, and checks for what goes on ``#SBATCH`` lines."""

import re
import shlex
from collections.abc import Iterable, Mapping
from importlib.resources import files
from pathlib import Path

from jinja2 import Environment, StrictUndefined, Template, meta

# Apptainer/Singularity bind specs are split on ',' and ':'
BIND_PATH = re.compile(r"/[^:,\s]*")
# sbatch reads directive values up to whitespace, without shell quoting
SBATCH_VALUE = re.compile(r"[^\s'\"\\;&|<>`$]+")
# Slurm's output file patterns carta-hub expands itself
LOG_CODES = re.compile(r"%(.)")


def load_template(path: str = "") -> Template:
    """The job script template: the file at ``path``, else the packaged one."""
    if path:
        text = Path(path).read_text()
    else:
        text = files(__package__).joinpath("job.sh.j2").read_text()
    return compile_template(text)


def _environment() -> Environment:
    env = Environment(
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=StrictUndefined,
        autoescape=False,
    )
    env.filters["quote"] = shlex.quote
    return env


def compile_template(text: str) -> Template:
    """A job script template from its Jinja text."""
    return _environment().from_string(text)


def template_variables(text: str) -> set[str]:
    """The variables the Jinja ``text`` reads (TemplateSyntaxError if it is no template)."""
    return meta.find_undeclared_variables(_environment().parse(text))


def bind_spec(bind: Mapping) -> str:
    """``{source, target, read_only}`` as ``--bind`` argument ``source:target[:ro]``."""
    for path in (bind["source"], bind["target"]):
        if not BIND_PATH.fullmatch(path):
            raise ValueError(f"bind path {path!r} must be absolute, without ':' ',' or spaces")
    return f"{bind['source']}:{bind['target']}" + (":ro" if bind.get("read_only") else "")


def container_argv(
    runtime: str,
    image: str,
    binds: Iterable[Mapping],
    gpus: int,
    extra_args: Iterable[str] = (),
) -> list[str]:
    """``apptainer exec ... IMAGE`` (or singularity), or nothing for ``runtime == "none"``."""
    if runtime == "none":
        return []
    if not image:
        raise ValueError(
            "No container image: set c.CARTASlurmSpawner.container_image to the CARTA "
            "Apptainer image (.sif), or c.CARTASlurmSpawner.container_runtime = 'none'."
        )
    argv = [runtime, "exec"]
    if gpus:
        argv.append("--nv")
    for bind in binds:
        argv += ["--bind", bind_spec(bind)]
    return argv + list(extra_args) + [image]


def sbatch_value(what: str, value: str) -> str:
    """``value`` if it can stand on an ``#SBATCH`` line, else ValueError naming ``what``."""
    if not SBATCH_VALUE.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} cannot go on an #SBATCH line (no spaces, quotes or shell characters)"
        )
    return value


def log_file(path: str, job_id: str, login: str, job_name: str) -> str:
    """``path`` with Slurm's ``%j %u %x %%`` replaced as sbatch would."""
    values = {"j": job_id, "u": login, "x": job_name, "%": "%"}

    def value(match):
        if match.group(1) not in values:
            raise ValueError(f"log path {path!r}: only %j, %u, %x and %% are supported")
        return values[match.group(1)]

    return LOG_CODES.sub(value, path)


def shell_log_file(path: str, login: str, job_name: str) -> str:
    """:func:`log_file` as one shell word, the job id taken from ``$SLURM_JOB_ID``."""
    parts = log_file(path, "\0", login, job_name).split("\0")
    return '"${SLURM_JOB_ID}"'.join(shlex.quote(part) for part in parts)
