"""Slurm through slurmrestd: submit, list, cancel and re-time jobs without sudo or munge.

The Hub signs a short-lived HS256 token (the cluster's ``AuthAltParameters=jwt_key``) for the
one account it acts for, with Slurm's ``sun`` claim, and sends it as ``X-SLURM-USER-NAME`` and
``X-SLURM-USER-TOKEN`` (slurmrestd's ``rest_auth/jwt``; slurmctld checks the signature and
``exp``). Never for root. The newest API version both sides speak comes from slurmrestd's
OpenAPI document. Every failure is a :class:`SlurmRestError` whose text is the message for the
student or the operator.

slurmrestd reads no ``#SBATCH`` lines: :func:`job_properties` turns the job script's header
into the job description, so the same script runs as through ``sbatch``.
"""

import json
import math
import pwd
import re
import time
from pathlib import Path

import jwt
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from carta_hub.hub.identity import valid_login
from carta_hub.hub.slurm.squeue import JobInfo

SPOKEN = ("v0.0.38",)  # Slurm 22.05 and 23.02 offer it
_VERSION_PATH = re.compile(r"/slurm/(v\d+\.\d+\.\d+)/.*")
# slurmctld closes the connection on a token it refuses; slurmrestd reports that so
_REFUSED = {-1, 1000, 1007, 5005}
_PROBE_LIFETIME = 3600  # s: the token that tells a wrong key from a slow clock


class SlurmRestError(Exception):
    """A request slurmrestd or Slurm refused; str() is the message to show."""


class SlurmRest:
    """slurmrestd at ``url``, with tokens signed by the key in ``key_file``."""

    _versions: dict[str, str] = {}  # url: the version chosen (one OpenAPI read per Hub)

    def __init__(
        self,
        url: str,
        key_file: str,
        lifetime: int = 60,
        operator: str = "slurm",
        timeout: float = 20.0,
    ):
        self.url = url.rstrip("/")
        self.key_file = key_file
        self.lifetime = lifetime
        self.operator = operator
        self.timeout = timeout

    # --- the API ---

    async def submit(self, username: str, script: str, env: dict[str, str]) -> str:
        """Submit ``script`` as ``username`` with exactly ``env``; the job id."""
        job = {**job_properties(script), "environment": env}
        reply = await self._call(username, "POST", "job/submit", {"script": script, "job": job})
        if not reply.get("job_id"):
            raise SlurmRestError(f"slurmrestd answered without a job id: {_errors(reply)}")
        return str(reply["job_id"])

    async def jobs(self) -> dict[str, JobInfo]:
        """Every job Slurm lists, as slurm_operator: ONE ``GET .../jobs``."""
        reply = await self._call(self.operator, "GET", "jobs")
        return {str(j["job_id"]): job_info(j) for j in reply.get("jobs", [])}

    async def query(self, ids: list[str]) -> tuple[dict[str, JobInfo] | None, str | None]:
        """QueuePoller's query: ``ids`` Slurm lists, or (None, why it failed)."""
        try:
            jobs = await self.jobs()
        except SlurmRestError as e:
            return None, f"slurmrestd: {e}"
        return {i: jobs[i] for i in ids if i in jobs}, None

    async def cancel(self, username: str, job_id: str) -> None:
        """Cancel ``job_id`` as its owner ``username``; a job Slurm forgot is no error."""
        try:
            await self._call(username, "DELETE", f"job/{_job_id(job_id)}")
        except SlurmRestError as e:
            if "Invalid job id specified" not in str(e):
                raise

    async def partitions(self) -> list[dict]:
        """Every partition as slurmrestd describes it, as slurm_operator: ONE ``GET
        .../partitions`` (extend.rest_partitions reads their MaxTime)."""
        reply = await self._call(self.operator, "GET", "partitions")
        return [p for p in reply.get("partitions") or [] if isinstance(p, dict)]

    async def set_time_limit(self, job_id: str, minutes: int) -> None:
        """Set the time limit of ``job_id`` as slurm_operator (students may not raise it)."""
        body = {"time_limit": int(minutes)}
        await self._call(self.operator, "POST", f"job/{_job_id(job_id)}", body)

    # --- tokens ---

    def headers(self, username: str, lifetime: int | None = None) -> dict[str, str]:
        """slurmrestd's headers for ``username``, with a token valid for ``lifetime`` s."""
        _check_account(username)
        now = int(time.time())
        claims = {"sun": username, "iat": now, "exp": now + (lifetime or self.lifetime)}
        token = jwt.encode(claims, self._key(), algorithm="HS256")
        return {"X-SLURM-USER-NAME": username, "X-SLURM-USER-TOKEN": token}

    def _key(self) -> bytes:
        try:
            key = Path(self.key_file).read_bytes()
        except OSError as e:
            raise SlurmRestError(
                f"The Hub cannot read the Slurm JWT key c.CARTASlurmSpawner.jwt_key_file="
                f"{self.key_file!r} ({e.strerror}): give the Hub's account a copy of the "
                "cluster's AuthAltParameters=jwt_key, readable only by it"
            ) from None
        if not key:
            raise SlurmRestError(f"The Slurm JWT key {self.key_file} is empty")
        return key

    # --- requests ---

    async def version(self, username: str) -> str:
        """The newest API version slurmrestd offers that carta-hub speaks (read once)."""
        if self.url not in self._versions:
            offered = await self._offered(username)
            spoken = [v for v in SPOKEN if v in offered]
            if not spoken:
                raise SlurmRestError(
                    f"slurmrestd at {self.url} offers the Slurm REST API "
                    f"{', '.join(sorted(offered)) or '(no /slurm/ version)'}; carta-hub speaks "
                    f"{', '.join(SPOKEN)}: start slurmrestd with -s openapi/{SPOKEN[-1]} "
                    "(or its default plugins)"
                )
            self._versions[self.url] = max(spoken, key=_version_key)
        return self._versions[self.url]

    async def _offered(self, username: str) -> set[str]:
        for path in ("/openapi/v3", "/openapi"):
            code, reply = await self._request(username, "GET", path)
            if code == 401:
                raise SlurmRestError(await self._why_refused(username, code, reply))
            if code == 200 and isinstance(reply.get("paths"), dict):
                found = (_VERSION_PATH.fullmatch(p) for p in reply["paths"])
                return {m.group(1) for m in found if m}
        raise SlurmRestError(
            f"slurmrestd at {self.url} serves no OpenAPI document (/openapi/v3, /openapi): "
            f"HTTP {code} {_errors(reply)}"
        )

    async def _call(self, username: str, method: str, path: str, body=None) -> dict:
        """``method`` on ``/slurm/<version>/<path>`` as ``username``; the reply, or raise."""
        version = await self.version(username)
        code, reply = await self._request(username, method, f"/slurm/{version}/{path}", body)
        if code == 404 and not reply:  # slurmrestd was restarted without this version
            self._versions.pop(self.url, None)
        if code == 200 and not reply.get("errors"):
            return reply
        if code == 401 or _refused(reply):
            raise SlurmRestError(await self._why_refused(username, code, reply))
        raise SlurmRestError(f"{_errors(reply)} (slurmrestd: HTTP {code} for {method} {path})")

    async def _request(self, username, method, path, body=None, lifetime=None):
        request = HTTPRequest(
            self.url + path,
            method=method,
            headers={
                **self.headers(username, lifetime),
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
            body=None if body is None else json.dumps(body),
            allow_nonstandard_methods=True,
            request_timeout=self.timeout,
            connect_timeout=min(self.timeout, 10),
        )
        try:
            response = await AsyncHTTPClient().fetch(request, raise_error=False)
        except (OSError, HTTPClientError) as e:
            raise SlurmRestError(self._unreachable(e)) from None
        if response.code == 599:
            raise SlurmRestError(self._unreachable(response.error))
        return response.code, _json(response.body)

    def _unreachable(self, error) -> str:
        return (
            f"slurmrestd at {self.url} is unreachable ({error}): the cluster's REST service "
            "is down or c.CARTASlurmSpawner.slurmrestd_url is wrong. Try again in a few "
            "minutes; if it persists, tell the administrators"
        )

    async def _why_refused(self, username, code, reply) -> str:
        """Slurm refused the token: a wrong key, or clocks so far apart that it expired.
        A token valid for an hour asks slurmctld for its time (``/diag``) to tell which."""
        said = reply.get("_text") or _errors(reply)
        version = self._versions.get(self.url, SPOKEN[-1])
        sent = time.time()
        probe, diag = await self._request(
            username, "GET", f"/slurm/{version}/diag", lifetime=_PROBE_LIFETIME
        )
        server_time = (diag.get("statistics") or {}).get("req_time")
        if probe == 200 and server_time:
            skew = server_time - sent
            if skew > self.lifetime - 5:
                return (
                    f"Slurm refused the Hub's token for {username}: the Hub's clock is "
                    f"{skew:.0f} s behind slurmctld's, so the token (valid "
                    f"{self.lifetime} s, c.CARTASlurmSpawner.jwt_lifetime) had expired. "
                    "Synchronise the clocks (NTP)"
                )
            return f"{said} (slurmrestd: HTTP {code})"
        return (
            f"slurmrestd refused the Hub's token for {username} (HTTP {code}: {said}): "
            f"c.CARTASlurmSpawner.jwt_key_file ({self.key_file}) is not the key of the "
            "cluster's AuthAltParameters=jwt_key, or slurmrestd does not run with "
            "-a rest_auth/jwt (or the clocks differ by over an hour)"
        )


def _check_account(username: str) -> None:
    """No token for root, uid 0 or a name the identity rules would refuse."""
    if not valid_login(username or ""):
        raise SlurmRestError(f"No Slurm token for {username!r}: not a valid login name")
    try:
        uid = pwd.getpwnam(username).pw_uid
    except KeyError:
        uid = None
    if username == "root" or uid == 0:
        raise SlurmRestError(f"No Slurm token for {username!r}: it is root (uid 0)")


def _job_id(job_id: str) -> str:
    if not re.fullmatch(r"[0-9]+", job_id or ""):
        raise SlurmRestError(f"{job_id!r} is not a Slurm job id")
    return job_id


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(n) for n in version[1:].split("."))


def _json(body: bytes | None) -> dict:
    text = (body or b"").decode(errors="replace")
    try:
        value = json.loads(text)
    except ValueError:
        return {"_text": text.strip()[:300]} if text.strip() else {}
    return value if isinstance(value, dict) else {}


def _refused(reply: dict) -> bool:
    # v0.0.38 names the code error_number (jobs, diag), error_code or errno (partitions)
    codes = {e.get("error_number", e.get("error_code", e.get("errno"))) for e in _error_list(reply)}
    return bool(codes & _REFUSED)


def _error_list(reply: dict) -> list[dict]:
    return [e for e in reply.get("errors") or [] if isinstance(e, dict)]


def _errors(reply: dict) -> str:
    """Slurm's ``errors`` array (or the plain text slurmrestd sent) as one line."""
    said = [_error(e) for e in _error_list(reply)]
    return "; ".join(said) or reply.get("_text") or "no reason given"


def _error(error: dict) -> str:
    """``description: error`` of one entry, each part once."""
    description, name = str(error.get("description") or ""), str(error.get("error") or "")
    if name in description:
        return description or str(error)
    return f"{description}: {name}" if description else name


def job_info(job: dict) -> JobInfo:
    """One job of ``GET .../jobs`` (v0.0.38) as the poller's :class:`JobInfo`."""

    def epoch(name):
        value = job.get(name)
        return float(value) if isinstance(value, int) and value > 0 else None

    return JobInfo(
        str(job["job_id"]),
        str(job.get("job_state") or "UNKNOWN"),
        str(job.get("batch_host") or ""),
        str(job.get("state_reason") or ""),
        start_time=epoch("start_time"),
        end_time=epoch("end_time"),
    )


# --- the job script's #SBATCH header as a v0.0.38 job description ---

_OPTIONS = {  # long option: (short option, job property, converter)
    "job-name": ("J", "name", str),
    "output": ("o", "standard_output", str),
    "error": ("e", "standard_error", str),
    "chdir": ("D", "current_working_directory", str),
    "nodes": ("N", "nodes", lambda v: [int(n) for n in v.split("-")] * (2 - v.count("-"))),
    "ntasks": ("n", "tasks", int),
    "cpus-per-task": ("c", "cpus_per_task", int),
    "mem": ("", "memory_per_node", lambda v: _megabytes(v)),
    "mem-per-cpu": ("", "memory_per_cpu", lambda v: _megabytes(v)),
    "partition": ("p", "partition", str),
    "time": ("t", "time_limit", lambda v: _minutes(v)),
    "account": ("A", "account", str),
    "qos": ("q", "qos", str),
    "gres": ("", "gres", str),
    "gpus": ("G", "gpus", str),
    "constraint": ("C", "constraints", str),
    "reservation": ("", "reservation", str),
    "exclusive": ("", "exclusive", lambda v: v or "exclusive"),
    "comment": ("", "comment", str),
    "licenses": ("L", "licenses", str),
    "export": ("", None, None),  # the environment is sent whole (get_env)
}
_SHORT = {short: long for long, (short, _, _) in _OPTIONS.items() if short}
_UNITS = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}


def job_properties(script: str) -> dict:
    """The job description of ``script``'s ``#SBATCH`` lines (those before its first
    command, as sbatch reads them). An option carta-hub cannot pass is a SlurmRestError."""
    properties = {}
    for line in script.splitlines()[1:]:
        if line.strip() and not line.startswith("#"):
            break
        if line.startswith("#SBATCH"):
            for option, value in _sbatch_options(line[len("#SBATCH") :].split("#")[0]):
                properties.update(sbatch_property(option, value))
    return properties


def sbatch_property(option: str, value: str) -> dict:
    """``{property: value}`` for one sbatch option (``--mem``, ``-p``...)."""
    name = _SHORT.get(option[1:], option[2:]) if option.startswith("-") else option
    if name not in _OPTIONS:
        supported = ", ".join(f"--{o}" for o in _OPTIONS)
        raise SlurmRestError(
            f"#SBATCH {option} cannot be passed to slurmrestd (it reads no #SBATCH lines; "
            f"carta-hub converts {supported})"
        )
    _, prop, convert = _OPTIONS[name]
    try:
        return {prop: convert(value)} if prop else {}
    except ValueError:
        raise SlurmRestError(f"#SBATCH {option}={value}: not a value Slurm reads") from None


def _sbatch_options(text: str):
    """(option, value) pairs of one #SBATCH line: --opt=value, --opt value, -o value."""
    words = text.split()
    while words:
        word = words.pop(0)
        if "=" in word and word.startswith("--"):
            yield tuple(word.split("=", 1))
        elif word in ("--exclusive",):
            yield word, ""
        elif word.startswith("-"):
            glued = word[2:] if not word.startswith("--") and len(word) > 2 else ""
            yield (word[:2], glued) if glued else (word, words.pop(0) if words else "")
        else:
            raise SlurmRestError(f"#SBATCH {text.strip()}: {word!r} is no option")


def _megabytes(value: str) -> int:
    match = re.fullmatch(r"([0-9]+)([KMGT]?)B?", value.upper())
    if not match:
        raise ValueError(value)
    return math.ceil(int(match.group(1)) * _UNITS[match.group(2) or "M"])


def _minutes(value: str) -> int:
    """Slurm's time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S."""
    days, _, rest = value.rpartition("-") if "-" in value else ("0", "", value)
    parts = [int(p) for p in rest.split(":")]
    if "-" in value:
        hours, minutes, seconds = (parts + [0, 0])[:3]
    elif len(parts) == 3:
        hours, minutes, seconds = parts
    else:
        hours, minutes, seconds = 0, parts[0], (parts[1:] or [0])[0]
    return int(days) * 1440 + hours * 60 + minutes + math.ceil(seconds / 60)
