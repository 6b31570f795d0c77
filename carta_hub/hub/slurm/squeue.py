"""One ``squeue`` call per poll interval for all of a Hub's Slurm jobs.

batchspawner runs one ``squeue`` per server per poll, which floods slurmctld on a busy Hub.
:class:`QueuePoller` keeps the set of watched job ids and runs ONE ``squeue -j id,id,...``
per tick, every ``slow`` seconds while nobody is waiting, every ``fast`` seconds while some
spawner waits for a fresh answer (a job starting or being stopped). Spawners read the cache.
"""

import asyncio
import os
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass

from batchspawner import JobStatus

# id, long state, batch host, start (expected while pending), end, reason (last: it may
# contain spaces); times in epoch seconds through SLURM_TIME_FORMAT (TIME_ENV)
FORMAT = "%i %T %B %S %e %r"
TIME_ENV = {"SLURM_TIME_FORMAT": "%s"}
PENDING = {
    "PENDING",
    "CONFIGURING",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESIZING",
    "SUSPENDED",
}
RUNNING = {"RUNNING", "COMPLETING"}
UNKNOWN = "UNKNOWN"  # squeue itself failed: keep the server, ask again later


@dataclass(frozen=True)
class JobInfo:
    """One job as the last ``squeue`` saw it."""

    job_id: str
    state: str
    node: str = ""
    reason: str = ""
    start_time: float | None = None  # epoch seconds: actual, or Slurm's expected start
    end_time: float | None = None  # epoch seconds: when the time limit ends the job

    @property
    def status(self) -> JobStatus:
        if self.state in RUNNING:
            return JobStatus.RUNNING
        if self.state in PENDING:
            return JobStatus.PENDING
        if self.state == UNKNOWN:
            return JobStatus.UNKNOWN
        return JobStatus.NOTFOUND

    @property
    def status_line(self) -> str:
        """batchspawner's ``job_status`` format: ``STATE HOST``."""
        return f"{self.state} {self.node}"


def parse(output: str) -> dict[str, JobInfo]:
    """``squeue -h -o FORMAT`` output (times as epoch seconds) to ``{job_id: JobInfo}``."""
    jobs = {}
    for line in output.splitlines():
        parts = line.split(None, 5) + [""] * 4
        if parts[1]:
            jobs[parts[0]] = JobInfo(
                parts[0],
                parts[1],
                "" if parts[2] == "n/a" else parts[2],
                parts[5],
                _epoch(parts[3]),
                _epoch(parts[4]),
            )
    return jobs


def _epoch(field):
    """An squeue time printed with ``SLURM_TIME_FORMAT=%s``; ``N/A``/``Unknown``: None."""
    return float(field) if field.isdigit() and int(field) > 0 else None


class QueuePoller:
    """Shared by all spawners of one Hub (one per event loop and squeue command)."""

    _shared = {}

    def __init__(self, command, log, timeout=30.0, query=None):
        self.command = command
        # ``await query(ids)``: ({job_id: JobInfo} of those Slurm lists, None) or (None,
        # why it failed); default: one squeue call, else one slurmrestd request
        self.query = query or self._squeue
        self.log = log
        self.timeout = timeout
        self.slow, self.fast = 30.0, 1.0
        self.jobs = {}  # results of the last query for the ids it asked about
        self.watched = set()
        self.on_gone = {}  # job id: callback of a started server, see notify_when_gone()
        self.calls = 0
        self._last = float("-inf")
        self._tick = None  # future resolved by the next query, created by the first waiter
        self._wake = asyncio.Event()
        self._task = None

    @classmethod
    def shared(cls, command: str, log, slow: float, fast: float, query=None) -> "QueuePoller":
        """The poller of this event loop for ``command`` (a shell-style string, or the
        slurmrestd URL that ``query`` asks)."""
        key = (asyncio.get_running_loop(), command)
        poller = cls._shared.get(key)
        if poller is None:
            cls._shared = {k: p for k, p in cls._shared.items() if not k[0].is_closed()}
            poller = cls._shared[key] = cls(command, log, query=query)
        poller.slow, poller.fast = slow, fast
        return poller

    async def status(self, job_id: str, fresh: bool = True) -> JobInfo | None:
        """``JobInfo`` of ``job_id``, or None when Slurm no longer lists it.

        ``fresh``: from a query started after this call; otherwise the cached answer
        (a query is still awaited when the job was never queried).
        """
        self._watch(job_id)
        if fresh or job_id not in self.jobs:
            await self._next_tick()
        return self.jobs.get(job_id)

    def forget(self, job_id: str) -> None:
        self.watched.discard(job_id)
        self.jobs.pop(job_id, None)
        self.on_gone.pop(job_id, None)

    def notify_when_gone(self, job_id: str, callback: Callable[[], object]) -> None:
        """Call ``callback()`` once, right after the query that finds ``job_id`` ended or
        back in the queue (requeued): the Hub then learns it within one query interval
        instead of at its next poll of the cached answer."""
        self._watch(job_id)
        self.on_gone[job_id] = callback

    def _watch(self, job_id):
        self.watched.add(job_id)
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    async def _next_tick(self):
        if self._tick is None:
            self._tick = asyncio.get_running_loop().create_future()
        tick = self._tick
        self._wake.set()
        await asyncio.shield(tick)

    async def _run(self):
        while self.watched:
            await self._until_due()
            tick, self._tick = self._tick, None
            try:
                await self._query(sorted(self.watched, key=int))
            finally:
                if tick is not None and not tick.done():
                    tick.set_result(None)

    async def _until_due(self):
        """Sleep until the next query is due: ``fast`` after the last if someone waits."""
        while True:
            interval = self.fast if self._tick is not None else self.slow
            remaining = self._last + interval - time.monotonic()
            if remaining <= 0:
                # let requests made in the same moment (e.g. a Hub restart) share the query
                await asyncio.sleep(0.05)
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except asyncio.TimeoutError:
                return

    async def _query(self, ids):
        self._last = time.monotonic()
        self.calls += 1
        found, error = await self.query(ids)
        answered = error is None
        if not answered:
            self.log.warning("%s", error)
            found = {i: JobInfo(i, UNKNOWN, reason=error.strip()[:200]) for i in ids}
        self.jobs = {i: found.get(i) for i in ids if i in self.watched}
        for job_id in [i for i in self.on_gone if i in self.jobs]:
            info = self.jobs[job_id]
            if answered and (
                info is None or info.status in (JobStatus.NOTFOUND, JobStatus.PENDING)
            ):
                self.on_gone.pop(job_id)()

    async def _squeue(self, ids):
        cmd = f"{self.command} -h --states=all -o {shlex.quote(FORMAT)} -j {','.join(ids)}"
        out, err, code = await self._run_command(cmd)
        if code == 0:
            return parse(out), None
        if "Invalid job id" in err:
            return {}, None
        return None, f"squeue failed ({code}): {err.strip()}"

    async def _run_command(self, cmd):
        try:
            proc = await asyncio.create_subprocess_shell(
                cmd,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={**os.environ, **TIME_ENV},
            )
        except OSError as e:
            return "", str(e), -1
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self.timeout)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            return "", f"timed out after {self.timeout} s", -1
        return out.decode(errors="replace"), err.decode(errors="replace"), proc.returncode
