"""The spawn form of a batch job: the operator's choices, shown as a form, strictly validated.

The operator lists what a student may pick (partition, cores, memory, wall time, GPUs,
account, QoS, server mode, a starting folder under allowed roots) as config on the spawner,
e.g. ``c.CARTASlurmSpawner.cores = [1, 2, 4]`` or ``{"min": 1, "max": 16}`` for a range.
Every value a student sends (form post or REST API ``user_options``) is checked against those
choices with full-match regexes; anything else raises :class:`FormError` with a message saying
what was wrong and what to do, and nothing is submitted. Only the canonical values of
:class:`Resources` ever reach a job script.
"""

import html
import posixpath
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from traitlets import Dict, Enum, HasTraits, Int, List, Unicode, Union, validate

from carta_hub import usercontext

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")
TIME_RE = re.compile(r"(?:[0-9]{1,2}-)?[0-9]{1,3}:[0-5][0-9]:[0-5][0-9]")
COUNT_RE = re.compile(r"0|[1-9][0-9]{0,5}")
PATH_RE = re.compile(r"/(?:[A-Za-z0-9_.@+-]+(?:/[A-Za-z0-9_.@+-]+)*)?")
MODES = {"carta": "CARTA", "lab": "JupyterLab with a CARTA tile"}
IGNORED = {"_xsrf"}


class FormError(ValueError):
    """A refused spawn request; the message is shown to the student."""


@dataclass(frozen=True)
class Resources:
    """Validated, canonical choices of one spawn."""

    mode: str
    partition: str
    cores: int
    memory_gb: int
    gpus: int
    runtime: str
    account: str
    qos: str
    folder: str

    def options(self) -> dict:
        """As JSON-able ``user_options`` (re-validated on every start)."""
        return asdict(self)


@dataclass(frozen=True)
class Choice:
    """A select: the value must be one of ``values`` (strings, exactly)."""

    name: str
    label: str
    values: tuple
    unit: str = ""
    labels: tuple = ()  # (value, text) pairs shown instead of the value

    def parse(self, raw: object) -> str:
        if raw == "" and not self.values:
            return ""
        if raw not in self.values:
            raise FormError(
                f"{self.label}: {_show(raw)} is not offered. "
                f"Choose one of: {', '.join(self.values) or '(none)'}."
            )
        return raw

    def default(self) -> str:
        return self.values[0] if self.values else ""

    def text(self, value: str) -> str:
        return dict(self.labels).get(value) or (f"{value} {self.unit}" if self.unit else value)

    def html(self, value: str) -> str:
        if len(self.values) == 1:
            return _row(self.label, html.escape(self.text(self.values[0])))
        options = "".join(
            f'<option value="{html.escape(v)}"{" selected" if v == value else ""}>'
            f"{html.escape(self.text(v))}</option>"
            for v in self.values
        )
        return _row(
            self.label,
            f'<select class="form-select form-control" name="{self.name}" '
            f'id="carta-{self.name}">{options}</select>',
            self.name,
        )


@dataclass(frozen=True)
class Range:
    """A number input: a decimal integer within [low, high]."""

    name: str
    label: str
    low: int
    high: int
    start: int
    unit: str = ""

    def parse(self, raw: object) -> str:
        if not isinstance(raw, str) or not COUNT_RE.fullmatch(raw):
            raise FormError(f"{self.label}: {_show(raw)} is not a whole number.")
        if not self.low <= int(raw) <= self.high:
            raise FormError(
                f"{self.label}: {raw} is outside {self.low}-{self.high}. "
                "Choose a value within that range."
            )
        return raw

    def default(self) -> str:
        return str(self.start)

    def html(self, value: str) -> str:
        return _row(
            self.label,
            f'<input type="number" class="form-control" name="{self.name}" '
            f'id="carta-{self.name}" min="{self.low}" max="{self.high}" '
            f'step="1" value="{html.escape(value)}"> {html.escape(self.unit)}',
            self.name,
        )


@dataclass(frozen=True)
class Folder:
    """A text input: an absolute path inside one of the user's allowed ``roots``."""

    name: str
    label: str
    roots: tuple

    def parse(self, raw: object) -> str:
        if raw == "":
            return ""
        if not isinstance(raw, str) or not PATH_RE.fullmatch(raw) or _not_normal(raw):
            raise FormError(
                f"{self.label}: {_show(raw)} is not a plain absolute path. Use letters, "
                "digits and _ . @ + - between single slashes, without '.' or '..' parts."
            )
        if not any(raw == r or raw.startswith(r.rstrip("/") + "/") for r in self.roots):
            raise FormError(
                f"{self.label}: {raw} is not inside your folders "
                f"({', '.join(self.roots)}). Pick a folder under one of them."
            )
        return raw

    def default(self) -> str:
        return ""

    def html(self, value: str) -> str:
        return _row(
            self.label,
            f'<input type="text" class="form-control" name="{self.name}" '
            f'id="carta-{self.name}" value="{html.escape(value)}" '
            f'placeholder="{html.escape(self.roots[0])}">',
            self.name,
        )


def _show(raw):
    text = repr(raw)
    return text if len(text) <= 40 else text[:37] + "..."


def _not_normal(path):
    return path != "/" and (posixpath.normpath(path) != path or ".." in path.split("/"))


def _row(label, control, name=""):
    target = f' for="carta-{name}"' if name else ""
    return (
        f'<div class="form-group mb-2"><label{target}>{html.escape(label)}</label> {control}</div>'
    )


def _count_field(name, label, spec, unit=""):
    if isinstance(spec, dict):
        return Range(name, label, spec["min"], spec["max"], spec.get("default", spec["min"]), unit)
    return Choice(name, label, tuple(str(v) for v in spec), unit)


def _count_trait(default, help):
    return Union(
        [
            List(Int(min=0)),
            Dict(per_key_traits={"min": Int(min=0), "max": Int(min=0), "default": Int(min=0)}),
        ],
        default_value=default,
        help=help,
    ).tag(config=True)


def _name_list(help):
    return List(Unicode(), help=help).tag(config=True)


class ResourceFormMixin(HasTraits):
    """Mix into a spawner: the choices, the form and the validation."""

    partitions = _name_list(
        "Slurm partitions a student may pick; the first is the default. "
        "Empty: no --partition (the cluster's default)."
    )
    cores = _count_trait(
        [1, 2, 4],
        "CPU cores per job: a list of choices (the first is the "
        "default) or a range {'min': 1, 'max': 16, 'default': 2}.",
    )
    memory_gb = _count_trait(
        [4, 8, 16],
        "Memory per job in GB: a list of choices or a range {'min': 1, 'max': 64, 'default': 4}.",
    )
    gpus = _count_trait(
        [0],
        "GPUs per job: a list of choices or a range. Jobs with GPUs get "
        "--gres=<gpu_gres>:N and the container's --nv.",
    )
    runtimes = _name_list(
        "Wall times a student may pick, Slurm's [D-]HH:MM:SS, the first "
        "is the default. Empty: no --time (the partition's default)."
    )
    accounts = _name_list("Slurm accounts a student may pick. Empty: no --account.")
    qos = _name_list("Slurm QoS names a student may pick. Empty: no --qos.")
    mode_choices = List(
        Enum(list(MODES)),
        help="Server modes a student may pick ('carta', 'lab'); the first is the default. "
        "Empty: always the spawner's carta_mode.",
    ).tag(config=True)
    folder_roots = List(
        Unicode(),
        default_value=["{home}"],
        help="A student may give a starting folder for CARTA inside one of these "
        "(templates of the user fields: {home}, {login}, {username}...). Empty: no folder field.",
    ).tag(config=True, user_template=True)

    @validate("folder_roots")
    def _roots_known_fields(self, proposal):
        setting = f"c.{type(self).__name__}.folder_roots"
        return [usercontext.check(root, setting) for root in proposal.value]

    @validate("partitions", "accounts", "qos")
    def _check_names(self, proposal):
        return _checked(proposal, NAME_RE, "a Slurm name (letters, digits, _ . + -)")

    @validate("runtimes")
    def _check_times(self, proposal):
        return _checked(proposal, TIME_RE, "[D-]HH:MM:SS")

    @validate("cores", "memory_gb", "gpus")
    def _check_counts(self, proposal):
        spec = proposal.value
        if isinstance(spec, dict):
            if set(spec) - {"min", "max", "default"} or {"min", "max"} - set(spec):
                raise ValueError(
                    f"{proposal.trait.name}: a range needs 'min' and 'max' "
                    f"(and optionally 'default'), got {spec}"
                )
            if not spec["min"] <= spec.get("default", spec["min"]) <= spec["max"]:
                raise ValueError(f"{proposal.trait.name}: need min <= default <= max, got {spec}")
        elif not spec:
            raise ValueError(f"{proposal.trait.name}: give at least one choice")
        return spec

    def resource_fields(self, names: Mapping[str, str]) -> list[Choice | Range | Folder]:
        """The form's fields for one user (``names``: {username}, {login}, {home}...)."""
        modes = self.mode_choices or [getattr(self, "carta_mode", "carta")]
        fields = [
            Choice("mode", "Interface", tuple(modes), labels=tuple(MODES.items())),
            Choice("partition", "Partition", tuple(self.partitions)),
            _count_field("cores", "CPU cores", self.cores),
            _count_field("memory_gb", "Memory", self.memory_gb, "GB"),
            _count_field("gpus", "GPUs", self.gpus),
            Choice("runtime", "Wall time (h:mm:ss)", tuple(self.runtimes)),
            Choice("account", "Account", tuple(self.accounts)),
            Choice("qos", "QoS", tuple(self.qos)),
        ]
        setting = f"c.{type(self).__name__}.folder_roots"
        roots = tuple(usercontext.fill(r, names, setting) for r in self.folder_roots)
        if roots:
            fields.append(Folder("folder", "Start CARTA in folder (optional)", roots))
        return fields

    def render_form(self, names: Mapping[str, str], last: dict | None = None) -> str:
        """The options form as HTML, every text in it escaped, with the student's ``last``
        choices (their previous ``user_options``) selected where still offered."""
        fields = self.resource_fields(names)
        return "\n".join(f.html(_remembered(f, last or {})) for f in fields if _shown(f))

    def parse_form(self, formdata: dict) -> dict:
        """Form data (``{name: [values]}``) to single strings, refusing repeated fields."""
        options = {}
        for key, values in formdata.items():
            if key in IGNORED:
                continue
            if not isinstance(values, list) or len(values) != 1:
                raise FormError(f"{_show(key)} must be given exactly once.")
            options[key] = values[0]
        return options

    def validate_resources(self, options: object, names: Mapping[str, str]) -> Resources:
        """Check ``options`` (form or REST API) against the choices: :class:`Resources`."""
        if not isinstance(options, dict):
            raise FormError("Server options must be an object of field names to values.")
        fields = {f.name: f for f in self.resource_fields(names)}
        unknown = sorted(set(options) - set(fields) - IGNORED, key=str)
        if unknown:
            raise FormError(
                f"Unknown option(s) {', '.join(_show(k) for k in unknown)}. "
                f"Allowed: {', '.join(fields)}."
            )
        values = {}
        for name, field in fields.items():
            raw = options.get(name, field.default())
            values[name] = field.parse(
                str(raw) if isinstance(raw, int) and not isinstance(raw, bool) else raw
            )
        values.setdefault("folder", "")
        return Resources(
            mode=values["mode"],
            partition=values["partition"],
            cores=int(values["cores"]),
            memory_gb=int(values["memory_gb"]),
            gpus=int(values["gpus"]),
            runtime=values["runtime"],
            account=values["account"],
            qos=values["qos"],
            folder=values["folder"],
        )


def _remembered(field, last):
    """``last``'s value of ``field`` if the field accepts it now, else its default."""
    raw = last.get(field.name)
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    try:
        return field.default() if raw is None else field.parse(raw)
    except FormError:
        return field.default()


def _shown(field):
    return not isinstance(field, Choice) or field.values


def _checked(proposal, regex, what):
    for value in proposal.value:
        if not regex.fullmatch(value):
            raise ValueError(f"{proposal.trait.name}: {value!r} is not {what}")
    return proposal.value
