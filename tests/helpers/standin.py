"""Run ``carta-standin`` (the carta_backend stand-in, not CARTA) in tests.

    from helpers.standin import running_standin

    with running_standin(tmp_path / "home", "--top_level_folder", str(data)) as backend:
        ws = await websockets.connect(backend.ws_url(), max_size=None)

``start_standin`` returns once the process logged ``Listening on port`` (or exited, or logged
``Could not listen``); ``running_standin`` also kills it by PID when the block ends.
Speak ICD 30 with :mod:`carta_standin.icd`.
"""

import contextlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time

from helpers.ports import free_port

__all__ = ["FRONTEND", "STANDIN", "Standin", "free_port", "running_standin", "start_standin"]

STANDIN = shutil.which("carta-standin") or os.path.join(
    os.path.dirname(sys.executable), "carta-standin"
)
#: The real built frontend (carta-frontend@6.0.0 from npm), installed by dev/install.sh.
FRONTEND = "/opt/carta-hub/node/node_modules/carta-frontend/build"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
STARTED = re.compile(r"Listening on port|Could not listen on port")


class Standin:
    """A started carta-standin: ``proc``, ``port``, ``token`` and its output ``lines``
    (stdout and stderr, ANSI colours removed), collected by a background thread."""

    def __init__(self, proc, port, token):
        self.proc, self.port, self.token = proc, port, token
        self.lines = []
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for raw in self.proc.stdout:
            with self._changed:
                self.lines.append(ANSI.sub("", raw.rstrip("\n")))
                self._changed.notify_all()
        with self._changed:
            self.proc.wait()
            self._changed.notify_all()

    def wait_for_line(self, pattern, timeout=10):
        """The first output line matching ``pattern`` (regex); TimeoutError if none comes
        within ``timeout`` s or the process ends without one."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    if re.search(pattern, line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.returncode is not None:
                    raise TimeoutError(f"no line matching {pattern!r}; output:\n{self.output}")
                self._changed.wait(left)

    def wait_exit(self, timeout=10):
        """The exit code; TimeoutError if it still runs after ``timeout`` s."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"carta-standin still runs; output:\n{self.output}") from None

    @property
    def output(self):
        return "\n".join(self.lines)

    def url(self, path="/"):
        return f"http://127.0.0.1:{self.port}{path}"

    def ws_url(self, path="/", token=True):
        """Websocket URL, with ``?token=`` unless ``token`` is False."""
        query = f"?token={self.token}" if token and self.token else ""
        return f"ws://127.0.0.1:{self.port}{path}{query}"

    def kill(self):
        """SIGKILL by PID (if still running) and reap."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def start_standin(home, *args, port=None, token="test-token", env=None, wait=True):
    """Start ``carta-standin --host 127.0.0.1 --port PORT --no_browser --no_log *args`` with
    ``HOME=home`` (created) and ``CARTA_AUTH_TOKEN=token`` (None: unset).

    With ``wait`` return after the startup line (``Listening on port`` or ``Could not listen``)
    or the process's exit. ``env`` adds environment variables.
    """
    port = port or free_port()
    os.makedirs(home, exist_ok=True)
    environment = {k: v for k, v in os.environ.items() if k != "CARTA_AUTH_TOKEN"}
    environment.update(HOME=str(home), **(env or {}))
    if token is not None:
        environment["CARTA_AUTH_TOKEN"] = token
    cmd = [
        STANDIN,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no_browser",
        "--no_log",
        *map(str, args),
    ]
    proc = subprocess.Popen(
        cmd,
        env=environment,
        stdin=subprocess.DEVNULL,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    backend = Standin(proc, port, token)
    if wait:
        try:
            backend.wait_for_line(STARTED.pattern)
        except TimeoutError:
            if proc.poll() is None:
                backend.kill()
                raise
    return backend


@contextlib.contextmanager
def running_standin(home, *args, **kwargs):
    """``start_standin(...)`` as a context manager that kills the process at the end."""
    backend = start_standin(home, *args, **kwargs)
    try:
        yield backend
    finally:
        backend.kill()
