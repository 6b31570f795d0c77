"""Run one user's ``carta_backend`` on loopback: pick a port, start, wait until it listens,
restart after a crash, report how it ended."""

import asyncio
import collections
import logging
import os
import re
import shutil
import socket
import sys

from tornado.httpclient import AsyncHTTPClient

from carta_hub.backend import LOOPBACK, BackendNotFound
from carta_hub.server.scripting import LiveSessions
from carta_hub.server.sessionhome import add_notice, carta_folder_problem, make_session_home

# carta_backend logs this at error level (src/Session/SessionManager.cc, Listen), shown at
# verbosity >= 2; its exit then follows with code 0 (src/Main/Main.cc, main).
PORT_BUSY = re.compile(r"Could not listen on port (\d+)")
# carta_backend prints "CARTA is accessible at http://HOST:PORT/?token=TOKEN" (Main.cc, main)
TOKEN_QUERY = re.compile(r"(token=)[^\s&#'\"<>]+")
REDACTED = "<redacted>"
# carta_backend logs this (warning level) when its frontend folder holds no readable index.html
# (src/HttpServer/HttpServer.cc, HttpServer and IsValidFrontendFolder), then serves 404 for
# every page (HandleStaticRequest)
FRONTEND_FOLDER = re.compile(r"Could not find CARTA frontend files in directory (.+)\.$")
DEFAULT_FRONTEND = "<the backend executable's folder>/../share/carta/frontend"  # Main.cc, main
ANSI = re.compile(r"\x1b\[[0-9;]*m")
NO_SETPRIV = (
    "CARTA cannot be started: {found}. carta-hub starts it with setpriv --pdeathsig "
    "(util-linux 2.33 or later), so that it ends with this server: install util-linux "
    "where the server runs (on the node, or in its image)."
)
PORT_ATTEMPTS = 5
POLL_SECONDS = 0.05
LISTEN_STATE = "0A"  # TCP_LISTEN in /proc/net/tcp
# 127.0.0.1 as /proc/net/tcp prints it: the address's bytes read as a native-endian integer
LOOPBACK_HEX = f"{int.from_bytes(socket.inet_aton(LOOPBACK), sys.byteorder):08X}"


class BackendFailed(RuntimeError):
    """The backend exited or did not listen in time; the message carries its log tail."""


class FrontendNotFound(BackendNotFound):
    """The backend runs, but has no frontend to serve: every page would be a 404."""


def redact(line: str, token: str | None) -> str:
    """``line`` without ``token`` and without any ``token=`` query value (the wrapper's log
    may be readable by others on a shared node, and its tail is shown on error pages)."""
    if token:
        line = line.replace(token, REDACTED)
    return TOKEN_QUERY.sub(rf"\1{REDACTED}", line)


async def die_with_parent() -> list[str]:
    """The command prefix that makes the backend end with the wrapper: util-linux's setpriv
    sets PR_SET_PDEATHSIG, then execs the backend (same PID), which the kernel sends SIGTERM
    when the thread that started it ends. That thread is the event loop's, which lives as long
    as the server, also when the wrapper is killed. (Not a ``preexec_fn``: it is not safe in a
    process with threads, as a Jupyter Server is.) BackendNotFound when setpriv lacks
    --pdeathsig (util-linux < 2.33) or is missing."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise BackendNotFound(NO_SETPRIV.format(found="setpriv is not on PATH"))
    prefix = [setpriv, "--pdeathsig", "TERM", "--"]
    probe = await asyncio.create_subprocess_exec(
        *prefix,
        "true",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await probe.communicate()
    if probe.returncode:
        found = f"{setpriv} says: {err.decode(errors='replace').strip()}"
        raise BackendNotFound(NO_SETPRIV.format(found=found))
    return prefix


def free_port() -> int:
    """A port that is free on loopback right now (taken before the backend binds it: the
    backend gives up on it and is started again on another)."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def _exited(pid):
    """The process died, though asyncio may not have collected its exit status yet (a
    request right after a crash must restart the backend, not hit its closed port)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return os.path.isdir("/proc/self")  # reaped (no /proc at all: cannot tell)
    except OSError:
        return False


def _listeners(port):
    """``(address, uid, inode)`` of the TCP sockets listening on ``port`` in this network
    namespace (the one our connections to 127.0.0.1 go through), of any user."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = [line.split() for line in f.readlines()[1:]]
        except OSError:
            continue
        for row in rows:
            address, port_hex = row[1].rsplit(":", 1)
            if row[3] == LISTEN_STATE and int(port_hex, 16) == port:
                found.append((address, int(row[7]), row[9]))
    return found


def _socket_inodes(pid):
    """Inodes of the sockets ``pid`` and its descendants hold; None when some cannot be read
    (e.g. a setuid container runtime in between)."""
    inodes, pids = set(), [pid]
    while pids:
        current = pids.pop()
        try:
            fds = os.listdir(f"/proc/{current}/fd")
            tasks = os.listdir(f"/proc/{current}/task")
        except PermissionError:
            return None
        except FileNotFoundError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{current}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
        for task in tasks:
            try:
                with open(f"/proc/{current}/task/{task}/children") as f:
                    pids += [int(child) for child in f.read().split()]
            except OSError:
                continue
    return inodes


def listening(pid: int, port: int) -> bool:
    """The backend ``pid`` (or a process it started) listens on 127.0.0.1:``port``.

    Not a connect: another user may bind the port before the backend does (the backend then
    exits), and a connect would reach their listener. The socket must be the backend's own;
    where its descriptors cannot be read, one of this user's sockets."""
    ours = [(uid, inode) for address, uid, inode in _listeners(port) if address == LOOPBACK_HEX]
    if not ours:
        return False
    inodes = _socket_inodes(pid)
    if inodes is None:
        return any(uid == os.geteuid() for uid, _ in ours)
    return any(inode in inodes for _, inode in ours)


def warn_unwritable_home(log) -> None:
    """CARTA runs from a full or read-only home (the wrapper keeps its log, the backend gets
    --no_log and a HOME of the session's own, :mod:`carta_hub.server.sessionhome`), but what the
    student saves is lost when the server stops: say so."""
    home = os.environ.get("HOME") or os.path.expanduser("~")
    problem = carta_folder_problem(home)
    if problem:
        log.warning(
            "Home folder %s is %s: CARTA keeps preferences, layouts and snippets for "
            "this session only (in a private temporary folder)",
            home,
            problem,
        )


async def _serves_no_frontend(port):
    """The backend answers 404 for its start page: its frontend folder has no index.html.
    (Asked, not read from its log: below verbosity 3 it does not say so.)"""
    response = await AsyncHTTPClient().fetch(
        f"http://{LOOPBACK}:{port}/", raise_error=False, request_timeout=30
    )
    return response.code == 404


class _Launch:
    """One start of the backend on ``port``, as its output and exit tell."""

    def __init__(self, proc, port, token):
        self.proc, self.port, self.token = proc, port, token
        self.busy = False
        self.exit_code = None
        self.frontend_folder = None  # the folder the backend says holds no frontend


class BackendProcess:
    """The backend of one server. ``ensure_running()`` starts it when needed."""

    def __init__(self, backend, log=None, on_exit=None):
        self.backend = backend
        self.log = log or logging.getLogger("carta_hub")
        self.on_exit = on_exit
        self.port = None
        self.token = None
        self.proc = None
        self.tail = collections.deque(maxlen=40)
        self.sessions = LiveSessions()  # the frontend sessions it logged as connected
        self._serving = None  # the process that listened (its exit ends the session)
        self._lock = asyncio.Lock()
        self._home_checked = False
        self.home_problem = None  # why ~/.carta cannot be written ("not writable", "full")
        self._home = None
        self._prefix = None  # die_with_parent()'s, found at the first start

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None and not _exited(self.proc.pid)

    async def ensure_running(self) -> tuple[int, str]:
        """Start the backend unless it runs; return ``(port, token)``."""
        async with self._lock:
            if not self.running:
                await self._start()
        return self.port, self.token

    async def _start(self):
        if not self._home_checked:
            self._home_checked = True
            warn_unwritable_home(self.log)
        if self._prefix is None:
            self._prefix = await die_with_parent()
        for _ in range(PORT_ATTEMPTS):
            port, token = free_port(), self.backend.new_token()
            outcome, launch = await self._launch(port, token)
            if outcome == "listening":
                if await _serves_no_frontend(port):
                    await self._kill()
                    raise FrontendNotFound(self._frontend_message(launch))
                self.port, self.token = port, token
                return
            if outcome != "busy":
                raise BackendFailed(self._failure_message(outcome))
            await self._kill()
        raise BackendFailed(f"CARTA could not find a free port in {PORT_ATTEMPTS} attempts")

    async def _launch(self, port, token):
        cmd = self.backend.command(port)
        # the token goes in CARTA_AUTH_TOKEN (read by src/Main/Main.cc, main), never on the
        # command line, which every user of the node can read
        env = {**os.environ, "CARTA_AUTH_TOKEN": token, "HOME": self.backend_home()}
        self.log.info("Starting CARTA backend: %s", " ".join(cmd))
        self.tail.clear()
        self.sessions.clear()
        self.proc = await asyncio.create_subprocess_exec(
            *self._prefix,
            *cmd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        launch = _Launch(self.proc, port, token)
        asyncio.ensure_future(self._follow(launch))
        try:
            return await asyncio.wait_for(self._outcome(launch), self.backend.start_timeout), launch
        except asyncio.TimeoutError:
            await self._kill()
            return f"did not listen within {self.backend.start_timeout} s", launch

    async def _outcome(self, launch):
        """ "listening", "busy" or why the backend failed: whatever happens first."""
        while True:
            if launch.busy:
                return "busy"
            if launch.exit_code is not None:
                # at verbosity < 2 a taken port shows only as an exit with code 0
                if launch.exit_code == 0 and _listeners(launch.port):
                    return "busy"
                return f"exited with code {launch.exit_code}"
            if listening(launch.proc.pid, launch.port):
                self._serving = launch.proc
                return "listening"
            await asyncio.sleep(POLL_SECONDS)

    async def _follow(self, launch):
        """Log the backend's output, note a busy port in it, then report the exit."""
        proc = launch.proc
        async for raw in proc.stdout:
            line = redact(ANSI.sub("", raw.decode(errors="replace")).rstrip(), launch.token)
            self.tail.append(line)
            self.log.info("[carta_backend] %s", line)
            if proc is self.proc:
                self.sessions.feed(line)
            launch.busy = launch.busy or bool(PORT_BUSY.search(line))
            if found := FRONTEND_FOLDER.search(line):
                launch.frontend_folder = found.group(1)
        launch.exit_code = code = await proc.wait()
        self.log.log(
            logging.INFO if code == 0 else logging.WARNING,
            "CARTA backend exited with code %s",
            code,
        )
        if self.on_exit and proc is self.proc and proc is self._serving:
            self.on_exit(code)

    def backend_home(self) -> str:
        """The backend's HOME: the user's, or a private folder of this session's when the
        backend could not keep its files in ~/.carta (:mod:`carta_hub.server.sessionhome`);
        chosen at the first start. The folders CARTA shows do not depend on it."""
        if self._home is None:
            home = self.backend.folder("{home}")
            self.home_problem = carta_folder_problem(home)
            self._home = make_session_home(home) if self.home_problem else home
        return self._home

    def page_notice(self, response, path: str) -> None:
        """Tell the student on CARTA's page when changes are kept for this session only."""
        add_notice(response, path, self.home_problem)

    def _frontend_message(self, launch):
        folder = launch.frontend_folder or self.backend.frontend_folder or DEFAULT_FRONTEND
        return (
            f"CARTA's frontend was not found: {folder} holds no readable index.html, so "
            "CARTA would answer every page with 404 Not Found. Install the CARTA frontend "
            "or set c.CartaBackend.frontend_folder to the folder holding it (with the "
            "Ubuntu PPA: /usr/share/carta/frontend)."
        )

    def _failure_message(self, outcome):
        tail = "\n".join(self.tail) or "(no output)"
        return f"CARTA backend {outcome}. Its last output:\n{tail}"

    async def _kill(self):
        if self.running:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()

    async def stop(self) -> None:
        """Stop the backend if it runs."""
        async with self._lock:
            await self._kill()
