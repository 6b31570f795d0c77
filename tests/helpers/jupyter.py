"""A real Jupyter Server (the JupyterLab mode's server) on loopback, for tests."""

import os
import secrets
import subprocess
from pathlib import Path

import requests

from .hub import VENV_BIN, _end
from .ports import await_server, free_port


class JupyterServer:
    def __init__(self, proc, port, base_url, token, log_path, cafile=None):
        self.proc, self.port, self.base_url, self.token = proc, port, base_url, token
        self.url = f"{'https' if cafile else 'http'}://127.0.0.1:{port}{base_url}"
        self.log_path = log_path
        self.verify = cafile or True

    def get(self, path, **kwargs):
        return requests.get(
            self.url + path,
            headers={"Authorization": f"token {self.token}"},
            verify=self.verify,
            **kwargs,
        )

    def log(self):
        return Path(self.log_path).read_text(errors="replace")

    def stop(self):
        _end(self.proc.pid, self.proc)


def start_jupyter(workdir, base_url, args=(), user=None, tls=None, env=None):
    """``jupyter server`` with carta-hub installed, serving ``base_url``, as ``user``;
    ``tls``: (certificate and key file, CA file) to serve HTTPS itself; ``env``: added to
    its environment."""
    port, token = free_port(), secrets.token_hex(16)
    cmd = [
        str(VENV_BIN / "jupyter-server"),
        "--no-browser",
        f"--port={port}",
        "--ip=127.0.0.1",
        f"--ServerApp.base_url={base_url}",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={workdir}",
        *args,
    ]
    if tls:
        cmd += [f"--ServerApp.certfile={tls[0]}", f"--ServerApp.keyfile={tls[0]}"]
    if user:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--"] + cmd
    log_path = Path(workdir) / "jupyter.log"
    env = {
        **os.environ,
        "HOME": str(workdir),
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
        **(env or {}),
    }
    proc = subprocess.Popen(
        cmd, cwd=workdir, env=env, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT
    )
    server = JupyterServer(proc, port, base_url, token, log_path, tls and tls[1])

    def up():
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter server exited:\n{server.log()[-3000:]}")
        try:
            return server.get("api/status").status_code == 200
        except requests.ConnectionError:
            return False

    return await_server(server, up, 60, "Jupyter Server to answer")
