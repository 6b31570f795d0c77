"""Run one user's ``carta_backend`` on loopback: pick a port, start, wait until it listens,
restart after a crash, report how it ended."""

import asyncio
import collections
import ctypes
import logging
import os
import re
import signal
import socket

from .backend import LOOPBACK

LISTENING = re.compile(r"Listening on port (\d+)")
PORT_BUSY = re.compile(r"Could not listen on port (\d+)")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
PORT_ATTEMPTS = 5


class BackendFailed(RuntimeError):
    """The backend exited or did not listen in time; the message carries its log tail."""


def _die_with_parent():
    """No orphaned backend: the kernel sends it SIGTERM when the wrapper dies (Linux)."""
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port():
    """A port that is free on loopback right now (the backend's own busy-port line covers races)."""
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


def warn_unwritable_home(log):
    """CARTA runs from a full or read-only home (the wrapper keeps its log, the backend gets
    --no_log), but it cannot save preferences, layouts or snippets there: say so."""
    home = os.environ.get("HOME") or os.path.expanduser("~")
    carta = os.path.join(home, ".carta")
    target = carta if os.path.isdir(carta) else home
    if not os.access(target, os.W_OK):
        problem = "not writable"
    elif os.statvfs(target).f_bavail == 0:
        problem = "full"
    else:
        return
    log.warning("Home folder %s is %s: CARTA runs, but cannot save preferences, layouts or "
                "snippets (%s)", home, problem, target)


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
        self._lock = asyncio.Lock()
        self._home_checked = False

    @property
    def running(self):
        return (self.proc is not None and self.proc.returncode is None
                and not _exited(self.proc.pid))

    async def ensure_running(self):
        """Start the backend unless it runs; return ``(port, token)``."""
        async with self._lock:
            if not self.running:
                await self._start()
        return self.port, self.token

    async def _start(self):
        if not self._home_checked:
            self._home_checked = True
            warn_unwritable_home(self.log)
        for _ in range(PORT_ATTEMPTS):
            port, token = free_port(), self.backend.new_token()
            outcome = await self._launch(port, token)
            if outcome == "listening":
                self.port, self.token = port, token
                return
            if outcome != "busy":
                raise BackendFailed(self._failure_message(outcome))
            await self._kill()
        raise BackendFailed(f"CARTA could not find a free port in {PORT_ATTEMPTS} attempts")

    async def _launch(self, port, token):
        cmd = self.backend.command(port)
        env = {**os.environ, **self.backend.environment(token)}
        self.log.info("Starting CARTA backend: %s", " ".join(cmd))
        self.tail.clear()
        self.proc = await asyncio.create_subprocess_exec(
            *cmd, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        ready = asyncio.get_running_loop().create_future()
        asyncio.ensure_future(self._follow(self.proc, ready))
        try:
            return await asyncio.wait_for(ready, self.backend.start_timeout)
        except asyncio.TimeoutError:
            await self._kill()
            return f"did not listen within {self.backend.start_timeout} s"

    async def _follow(self, proc, ready):
        """Log the backend's output, resolve ``ready`` from it, then report the exit."""
        async for raw in proc.stdout:
            line = ANSI.sub("", raw.decode(errors="replace")).rstrip()
            self.tail.append(line)
            self.log.info("[carta_backend] %s", line)
            if not ready.done():
                if LISTENING.search(line):
                    ready.set_result("listening")
                elif PORT_BUSY.search(line):
                    ready.set_result("busy")
        code = await proc.wait()
        if not ready.done():
            ready.set_result(f"exited with code {code}")
        self.log.log(logging.INFO if code == 0 else logging.WARNING,
                     "CARTA backend exited with code %s", code)
        if self.on_exit and proc is self.proc and ready.result() == "listening":
            self.on_exit(code)

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

    async def stop(self):
        """Stop the backend if it runs."""
        async with self._lock:
            await self._kill()
