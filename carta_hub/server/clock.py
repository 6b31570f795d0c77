"""The session's clock, for CARTA's tab: when the session ends and why, and extending it.

``GET <prefix>carta-hub/session`` answers the owner ``{"ends_at", "reason", "now",
"can_extend", "why_not", "step_minutes", "warn_before"}`` (epoch seconds; ``reason`` "wall
time", "idle" or null). The earliest end wins:

- wall time: the Slurm job's end (``$SLURM_JOB_ID``; ``squeue`` on the node), cached;
- idle: carta_backend's ``--idle_timeout`` (``c.CartaBackend.idle_timeout``) after the last
  CARTA message from the browser (:meth:`~carta_hub.server.activity.LastUse.touch_message`):
  carta_backend then drops the session. Its ``--exit_timeout`` and jupyterhub-idle-culler
  only end a session whose tab is closed or disconnected: an open tab's 5-second PINGs go
  through configurable-http-proxy, which counts any websocket data as the route's activity
  (lib/configproxy.js, handleProxy), so the culler never stops a server a tab is open on.

``POST <prefix>carta-hub/session/extend`` asks the Hub (``POST
$JUPYTERHUB_API_URL/carta-hub/extend`` with the server's token) to raise the job's time limit.
``GET carta-hub/banner.js`` is the script the CARTA page loads (:func:`add_script`): a quiet
time-left indicator, a banner at ``c.CartaBackend.warn_before_end``, the extend button.
"""

import asyncio
import gzip
import json
import os
import re
import time

from jupyterhub.utils import url_path_join
from tornado import httpclient

from carta_hub.server import hubapi
from carta_hub.server.activity import SETTING
from carta_hub.server.routes import ROUTE_PREFIX, Route

SCRIPT = os.path.join(os.path.dirname(__file__), "banner.js")
#: Seconds a job's end read from Slurm is kept (an extend reads it again at once): one squeue
#: per server every few minutes, whatever the number of open tabs.
WALL_REFRESH = 300
#: Seconds the Hub's answer to "may this session be extended" is kept.
EXTEND_REFRESH = 60
HUB_TIMEOUT = 10
JOB_ID = re.compile(r"[0-9]+(_[0-9]+)?")
HEAD = re.compile(rb"</head\s*>", re.IGNORECASE)


async def job_end(job_id: str) -> float | None:
    """The end of Slurm job ``job_id`` (epoch seconds) as ``squeue`` on this node says it;
    None when it has none (no time limit) or squeue fails."""
    env = {**os.environ, "SLURM_TIME_FORMAT": "%s"}  # epoch seconds: no time zone to guess
    try:
        proc = await asyncio.create_subprocess_exec(
            "squeue",
            "-h",
            "-j",
            job_id,
            "-o",
            "%e",
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), HUB_TIMEOUT)
    except (OSError, asyncio.TimeoutError):
        return None
    text = out.decode(errors="replace").strip()
    return float(text) if text.isdigit() else None  # "N/A", "Unknown", nothing


class WallClock:
    """The Slurm job's end, read at most every :data:`WALL_REFRESH` s."""

    def __init__(self, job_id: str | None):
        self.job_id = job_id if job_id and JOB_ID.fullmatch(job_id) else None
        self._end: float | None = None
        self._read_at = -WALL_REFRESH

    async def end(self) -> float | None:
        if self.job_id and time.monotonic() - self._read_at >= WALL_REFRESH:
            self._end = await job_end(self.job_id)
            self._read_at = time.monotonic()
        return self._end

    def forget(self) -> None:
        """Read the end again next time (the time limit changed)."""
        self._read_at = -WALL_REFRESH


async def hub_extend(method: str) -> tuple[int, dict]:
    """``method`` on the Hub's ``carta-hub/extend`` with this server's token: (status, JSON
    body). Raises OSError/HTTPClientError when the Hub cannot be reached."""
    url = url_path_join(os.environ.get("JUPYTERHUB_API_URL", ""), "carta-hub/extend")
    response = await httpclient.AsyncHTTPClient().fetch(
        url,
        method=method,
        body=b"" if method == "POST" else None,
        raise_error=False,
        request_timeout=HUB_TIMEOUT,
        ssl_options=hubapi.client_ssl_context(),
        headers={"Authorization": f"token {os.environ.get('JUPYTERHUB_API_TOKEN', '')}"},
    )
    if response.code == 599:  # no HTTP answer at all
        raise OSError(str(response.error))
    try:
        body = json.loads(response.body or b"{}")
    except ValueError:
        body = {}
    return response.code, body if isinstance(body, dict) else {}


class Clock:
    """One server's clock (kept in the routes' state)."""

    def __init__(self, backend, last_use, started: float | None = None):
        self.backend = backend  # the CartaBackend settings
        self.last_use = last_use
        self.started = started or time.time()
        self.wall = WallClock(os.environ.get("SLURM_JOB_ID"))
        self._extend: dict = {}
        self._extend_at = -EXTEND_REFRESH

    def idle_end(self) -> float | None:
        if self.backend.idle_timeout <= 0:
            return None
        return (self.last_use.message_at or self.started) + self.backend.idle_timeout

    async def extend_policy(self) -> dict:
        """The Hub's answer to GET carta-hub/extend, kept :data:`EXTEND_REFRESH` s;
        ``{"can_extend": False}`` when the Hub has no such API or cannot be reached."""
        if time.monotonic() - self._extend_at >= EXTEND_REFRESH:
            try:
                status, body = await hub_extend("GET")
            except (OSError, httpclient.HTTPClientError):
                status, body = 0, {}
            self._extend = body if status == 200 else {"can_extend": False}
            self._extend_at = time.monotonic()
        return self._extend

    async def end(self) -> tuple[float | None, str | None, float | None]:
        """``(ends_at, reason, wall end)``: the earliest end and why (None, None: none)."""
        wall, idle = await self.wall.end(), self.idle_end()
        ends = [(t, reason) for t, reason in ((wall, "wall time"), (idle, "idle")) if t]
        ends_at, reason = min(ends) if ends else (None, None)
        return ends_at, reason, wall

    async def state(self) -> dict:
        ends_at, reason, wall = await self.end()
        idle = self.idle_end()
        policy = await self.extend_policy() if wall else {"can_extend": False}
        return {
            "ends_at": ends_at,
            "reason": reason,
            "now": time.time(),
            "wall_ends_at": wall,
            "idle_ends_at": idle,
            "can_extend": bool(policy.get("can_extend")),
            "why_not": policy.get("why_not", ""),
            "step_minutes": policy.get("step_minutes", 0),
            "warn_before": list(self.backend.warn_before_end),
        }

    async def extend(self) -> tuple[int, dict]:
        """Ask the Hub for more time: (status, body for the page)."""
        try:
            status, body = await hub_extend("POST")
        except (OSError, httpclient.HTTPClientError) as e:
            return 502, {"message": f"The Hub could not be reached ({e}): try again shortly."}
        self._extend_at = -EXTEND_REFRESH  # the policy may have changed (max_runtime)
        if status != 200:
            message = body.get("message") or f"The Hub refused to extend the session ({status})."
            return status, {"message": message}
        self.wall.forget()
        return 200, await self.state()


def server_clock(state: dict, last_use) -> Clock:
    """The server's clock (``state``: the routes' state), made at its first use."""
    if "clock" not in state:
        state["clock"] = Clock(state["backend"].backend, last_use)
    return state["clock"]


def clock(route: Route) -> Clock:
    return server_clock(route.state, route.settings[SETTING])


class SessionRoute(Route):
    path = "session"

    async def get(self):
        from carta_hub.server.autosave import autosaver  # it imports this module

        model = await clock(self).state()
        saver = autosaver(self.state, self.settings[SETTING])
        model.update(saver.page_model(self.carta_url(), model["reason"]))
        self.write_json(model)


class ExtendRoute(Route):
    path = "session/extend"

    async def post(self):
        status, body = await clock(self).extend()
        self.write_json(body, status)


class BannerScript(Route):
    path = "banner.js"

    def get(self):
        self.set_header("Content-Type", "text/javascript; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        with open(SCRIPT, "rb") as f:
            self.finish(f.read())


def script_url(base_url: str) -> str:
    return url_path_join(base_url, ROUTE_PREFIX, BannerScript.path)


def add_script(response, path: str, src: str) -> None:
    """Load the clock's script (``src``) from CARTA's start page (a jupyter-server-proxy
    rewrite_response step). Same origin: ``CartaBackend.offline``'s policy (connect-src
    'self') lets it and its requests through."""
    if path not in ("/", "/index.html") or response.code != 200:
        return
    body = response.body
    if response.headers.get("Content-Encoding") == "gzip":  # a packaged index.html.gz
        body = gzip.decompress(body)
        del response.headers["Content-Encoding"]
    tag = f'<script src="{src}" defer></script>'.encode()
    response.body = HEAD.sub(lambda m: tag + m.group(0), body, count=1)
