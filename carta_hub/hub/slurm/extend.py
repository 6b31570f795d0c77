"""Extending a running CARTA job's wall time: the operator's policy, and the Hub API the
student's server calls (``GET``/``POST /hub/api/carta-hub/extend``, authenticated with the
server's own API token).

A student cannot raise their own job's time limit in Slurm; the Hub does it as the Slurm
operator account (``CARTASlurmSpawner.set_time_limit``), never beyond the operator's
``max_runtime`` nor the partition's MaxTime. Each refusal says why, for the student.
"""

import asyncio
import hmac
import json
import re
import weakref
from collections.abc import Iterable
from typing import NamedTuple

from batchspawner import JobStatus
from jupyterhub.apihandlers import APIHandler
from tornado import web

PATH = r"/api/carta-hub/extend"
OTHER = "*"  # per-partition settings: the value for partitions not named
SLURM_TIME = re.compile(r"(?:([0-9]+)-)?([0-9]+):([0-9]{2}):([0-9]{2})")


class ExtendError(Exception):
    """Raising a time limit failed; ``status`` is the HTTP status the student's server gets,
    the message says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def per_partition(setting: int | dict, partition: str) -> int:
    """The value of ``extend_step``/``max_runtime`` for a job on ``partition`` (``""``: the
    cluster's default partition, which only ``"*"`` covers)."""
    if isinstance(setting, int):
        return setting
    return setting.get(partition, setting.get(OTHER, 0))


def is_server_token(spawner, token: str | None) -> bool:
    """Whether ``token`` is the API token JupyterHub gave ``spawner``'s server in this Hub's
    run. Neither may be empty (a restarted Hub holds none); compared in constant time."""
    expected = spawner.api_token or ""
    return bool(expected and token) and hmac.compare_digest(expected.encode(), token.encode())


def hours(minutes: int) -> str:
    """``90`` -> ``1:30 h``: a time limit as the student reads it."""
    return f"{minutes // 60}:{minutes % 60:02d} h"


class Partition(NamedTuple):
    """A Slurm partition as the extend policy reads it, from either transport."""

    name: str
    default: bool  # the cluster's default partition (Default=YES)
    max_minutes: int | None  # MaxTime in minutes; None: UNLIMITED


def partition_max_time(partitions: Iterable[Partition], partition: str) -> int | None:
    """MaxTime in minutes of ``partition`` ("": the default one); None: UNLIMITED.
    ExtendError if Slurm does not list it."""
    for listed in partitions:
        if listed.name == partition or (not partition and listed.default):
            return listed.max_minutes
    raise ExtendError(502, f"Slurm lists no partition {partition or '(default)'}")


def scontrol_partitions(lines: str) -> list[Partition]:
    """The partitions of ``scontrol -o show partition``'s output (the CLI transport)."""
    partitions = []
    for line in lines.splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        partitions.append(
            Partition(
                fields.get("PartitionName", ""),
                fields.get("Default") == "YES",
                _minutes(fields.get("MaxTime", "")),
            )
        )
    return partitions


def _minutes(text: str) -> int | None:
    """``[D-]HH:MM:SS`` in minutes (seconds round up); None: anything else (UNLIMITED)."""
    found = SLURM_TIME.fullmatch(text)
    if not found:
        return None
    days, h, m, sec = (int(x or 0) for x in found.groups())
    return days * 1440 + h * 60 + m + (sec > 0)


def rest_partitions(listed: list[dict]) -> list[Partition]:
    """The partitions of slurmrestd's ``GET .../partitions`` (v0.0.38): ``max_time_limit``
    in minutes, -1 for MaxTime=INFINITE (as Slurm 22.05's slurmrestd answers), the default
    partition with ``"default"`` in its ``flags``."""
    return [
        Partition(
            str(p.get("name") or ""),
            "default" in (p.get("flags") or []),
            most if isinstance(most := p.get("max_time_limit"), int) and most >= 0 else None,
        )
        for p in listed
    ]


async def run(argv: list[str], timeout: float = 30) -> tuple[int, str]:
    """Run ``argv`` (no shell): its exit code and its output, stripped (on failure: the end
    of its error output)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        return -1, f"{argv[0]} gave no answer within {timeout:.0f} s"
    except OSError as e:
        return -1, str(e)
    if proc.returncode:
        return proc.returncode, err.decode(errors="replace").strip()[-1000:]
    return 0, out.decode(errors="replace").strip()


def time_limit(info) -> int | None:
    """A running job's time limit in minutes: Slurm keeps its end at start + limit."""
    if info is None or info.start_time is None or info.end_time is None:
        return None
    return round((info.end_time - info.start_time) / 60)


class Plan:
    """What one extension would do for one job: ``target`` minutes, or ``why_not``."""

    def __init__(self, step: int, limit: int | None, caps: list[tuple[int, str]]):
        self.step, self.limit = step, limit
        self.max_minutes = min((cap for cap, _ in caps), default=0)
        self.target, self.why_not = None, ""
        if not step:
            self.why_not = "Extending sessions is not offered for this kind of session."
        elif limit is None:
            self.why_not = "Slurm reports no time limit for your job yet; try again shortly."
        else:
            self.target = min([limit + step] + [cap for cap, _ in caps])
            if self.target <= limit:
                reason = min(caps)[1]
                self.target, self.why_not = None, f"Your session already has {reason}."

    @property
    def can_extend(self) -> bool:
        return self.target is not None


async def plan(spawner, info) -> Plan:
    """The extension ``spawner``'s job ``info`` may get under the operator's settings and
    the partition's MaxTime."""
    partition = spawner.job_partition()
    step = per_partition(spawner.extend_step, partition)
    caps = []
    most = per_partition(spawner.max_runtime, partition)
    if most:
        caps.append((most, f"the longest wall time allowed here ({hours(most)})"))
    if step:
        part_max = await spawner.partition_max_minutes(partition)
        if part_max is not None:
            name = f"partition {partition}" if partition else "the default partition"
            caps.append((part_max, f"the longest wall time of {name} ({hours(part_max)})"))
    return Plan(step, time_limit(info), caps)


_locks = weakref.WeakKeyDictionary()  # spawner: lock, one extension at a time


class ExtendHandler(APIHandler):
    """``GET``: may the job of the server whose token this is be extended, and until when it
    runs; ``POST``: extend it by one step (JSON ``{"message": why}`` when not)."""

    def _spawner(self):
        """The CARTA Slurm job whose server's API token authenticates this request."""
        token = self.get_auth_token()
        user = self.current_user
        for spawner in getattr(user, "spawners", {}).values() if token else ():
            if self._is_token_of(spawner, token):
                if not hasattr(spawner, "set_time_limit"):
                    raise web.HTTPError(404, "Your server is not a Slurm job.")
                if not spawner.job_id or not spawner.ready:
                    raise web.HTTPError(404, "Your CARTA job is not running.")
                return spawner
        raise web.HTTPError(404, "No server of yours uses this token.")

    def _is_token_of(self, spawner, token):
        """Whether ``token`` is the one JupyterHub made for ``spawner``'s server. A restarted
        Hub no longer holds it (it is not in the spawner's state): then the token's own
        record names the server it was made for (JupyterHub's note "Server at <url>")."""
        if spawner.api_token:
            return is_server_token(spawner, token)
        record = self.get_token()
        return bool(spawner.server and record and record.user) and (
            record.user.id == spawner.user.id
            and record.note == f"Server at {spawner.server.base_url}"
        )

    async def _running(self, spawner, fresh):
        info = await spawner.job_info(fresh=fresh)
        if info is None or info.status != JobStatus.RUNNING:
            raise web.HTTPError(404, "Your CARTA job is not running.")
        return info

    @web.authenticated
    async def get(self) -> None:
        spawner = self._spawner()
        info = await self._running(spawner, fresh=False)
        try:
            planned = await plan(spawner, info)
        except ExtendError as e:
            raise web.HTTPError(e.status, "%s", str(e)) from None
        self.finish(
            json.dumps(
                {
                    "can_extend": planned.can_extend,
                    "why_not": planned.why_not,
                    "step_minutes": planned.step,
                    "max_minutes": planned.max_minutes,
                    "time_limit_minutes": planned.limit,
                    "ends_at": info.end_time,
                }
            )
        )

    @web.authenticated
    async def post(self) -> None:
        spawner = self._spawner()
        lock = _locks.setdefault(spawner, asyncio.Lock())
        async with lock:
            try:
                await self._extend(spawner)
            except ExtendError as e:
                self.log.warning("Could not extend job %s: %s", spawner.job_id, e)
                raise web.HTTPError(e.status, "%s", str(e)) from None
            info = await self._running(spawner, fresh=True)
        self.finish(json.dumps({"time_limit_minutes": time_limit(info), "ends_at": info.end_time}))

    async def _extend(self, spawner):
        planned = await plan(spawner, await self._running(spawner, fresh=True))
        if not planned.can_extend:
            raise ExtendError(403, planned.why_not)
        self.log.info(
            "Raising the time limit of %s's job %s to %d min",
            spawner.user.name,
            spawner.job_id,
            planned.target,
        )
        await spawner.set_time_limit(planned.target)


def handlers(hub_prefix: str) -> list[tuple]:
    """The Hub's handlers of this API, for the front of ``JupyterHub.handlers``."""
    return [(hub_prefix.rstrip("/") + PATH, ExtendHandler)]
