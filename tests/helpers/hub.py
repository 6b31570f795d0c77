"""A real JupyterHub + configurable-http-proxy on loopback, for tests.

``start_hub(workdir, config)`` writes a jupyterhub_config.py (base settings + ``config``),
starts the Hub on free ports and returns a :class:`Hub`. ``Hub.stop()`` ends exactly the
processes it started (the Hub, then the proxy whose PID the Hub recorded), by PID.

The Hub runs with a newcomer's PATH (:data:`NEWCOMER_PATH`: not the venv), as `make demo`
from a plain root shell does: configs name the venv's commands by absolute path.
"""

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import requests

from .ports import free_port, wait_for

PREFIX = Path(os.environ.get("CARTA_HUB_PREFIX", "/opt/carta-hub"))
VENV_BIN = PREFIX / "venv" / "bin"
CHP = PREFIX / "node" / "node_modules" / ".bin" / "configurable-http-proxy"
FRONTEND = PREFIX / "node" / "node_modules" / "carta-frontend" / "build"
NEWCOMER_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # a minimal root PATH, without the venv

# Applied after the test's own config, so that no config under test escapes the test's
# ports and folder.
ISOLATION = """
c.JupyterHub.bind_url = "http://127.0.0.1:{proxy_port}"
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.api_url = "{api_scheme}://127.0.0.1:{api_port}"
c.ConfigurableHTTPProxy.command = ["{chp}"]
c.ConfigurableHTTPProxy.pid_file = "{workdir}/proxy.pid"
c.JupyterHub.db_url = "sqlite:///{workdir}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{workdir}/cookie_secret"
c.JupyterHub.pid_file = "{workdir}/hub.pid"
"""
# JupyterHub's internal_ssl: TLS with client certificates between the Hub, CHP's API, CHP's
# targets and the servers (the browser's side of CHP stays plain HTTP).
INTERNAL_SSL = """
c.JupyterHub.internal_ssl = True
c.JupyterHub.internal_certs_location = "{workdir}/certs"
"""
BASE_CONFIG = """
c.JupyterHub.log_level = "DEBUG"
c.JupyterHub.services = [{{"name": "tests", "api_token": "{api_token}"}}]
c.JupyterHub.load_roles = [{{"name": "tests", "services": ["tests"], "scopes": ["admin:users", "admin:servers", "access:servers", "read:hub"]}}]
c.Authenticator.allow_all = True
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = "{password}"
c.Spawner.http_timeout = 60
c.Spawner.start_timeout = 120
c.CartaBackend.executable = "{venv_bin}/carta-standin"
c.CartaBackend.frontend_folder = "{frontend}"
"""


# CARTA-only servers run as the Hub's own (unprivileged) user, one home per Hub user, so
# that any username (dots, @, unicode) can be tested without a unix account for it.
SAME_USER_CARTA = """
from carta_hub.hub.spawner import CARTALocalSpawner
from jupyterhub.spawner import SimpleLocalProcessSpawner

class SameUserCartaSpawner(CARTALocalSpawner, SimpleLocalProcessSpawner):
    pass

c.JupyterHub.spawner_class = SameUserCartaSpawner
c.SameUserCartaSpawner.home_dir_template = "{workdir}/homes/{username}"
"""


class Hub:
    def __init__(self, workdir, proc, ports, api_token, password, internal_ssl=False):
        self.workdir = Path(workdir)
        self.proc = proc
        self.url = f"http://127.0.0.1:{ports['proxy_port']}"
        scheme = "https" if internal_ssl else "http"
        self.proxy_api = f"{scheme}://127.0.0.1:{ports['api_port']}"  # CHP's own API
        # requests' options for CHP's API: under internal_ssl, the Hub's own client certificate
        certs = self.workdir / "certs"
        self.proxy_api_tls = (
            {}
            if not internal_ssl
            else {
                "cert": (
                    str(certs / "hub-internal" / "hub-internal.crt"),
                    str(certs / "hub-internal" / "hub-internal.key"),
                ),
                "verify": str(certs / "hub-ca_trust.crt"),
            }
        )
        self.api_token = api_token
        self.password = password

    def api(self, method, path, **kwargs):
        r = requests.request(
            method,
            f"{self.url}/hub/api{path}",
            headers={"Authorization": f"token {self.api_token}"},
            **kwargs,
        )
        return r

    def user_url(self, name, path=""):
        return f"{self.url}/user/{quote(name, safe='@~')}/{path}"

    def login(self, name, password=None):
        """A requests.Session logged in to the Hub as ``name`` through the login form."""
        session = requests.Session()
        session.get(f"{self.url}/hub/login")
        xsrf = session.cookies.get("_xsrf", "")
        r = session.post(
            f"{self.url}/hub/login?next=",
            allow_redirects=False,
            data={
                "username": name,
                "password": self.password if password is None else password,
                "_xsrf": xsrf,
            },
        )
        if r.status_code != 302:
            raise PermissionError(f"login as {name} refused: {r.status_code}")
        return session

    def start_server(self, name, timeout=90, **options):
        """Start ``name``'s server through the REST API and wait until it is ready."""
        self.api("POST", f"/users/{quote(name, safe='')}", json={})
        r = self.api("POST", f"/users/{quote(name, safe='')}/server", json=options)
        assert r.status_code in (201, 202), r.text
        wait_for(lambda: self.server(name).get("ready"), timeout, f"{name}'s server ready")

    def stop_server(self, name, timeout=60):
        self.api("DELETE", f"/users/{quote(name, safe='')}/server")
        wait_for(lambda: not self.server(name), timeout, f"{name}'s server stopped")

    def server(self, name):
        user = self.api("GET", f"/users/{quote(name, safe='')}").json()
        return user.get("servers", {}).get("", {})

    def user_model(self, name):
        return self.api("GET", f"/users/{quote(name, safe='')}").json()

    def log(self):
        return (self.workdir / "hub.log").read_text(errors="replace")

    def proxy_pid(self):
        """The PID of the configurable-http-proxy the Hub runs now (None: none)."""
        return _read_pid(self.workdir / "proxy.pid")

    def stop(self):
        """End the Hub, then its proxy: the one it ran, and any it started while stopping
        (its proxy check can restart the proxy it has just ended)."""
        proxy_pids = {self.proxy_pid()}
        _end(self.proc.pid, self.proc)
        for pid in proxy_pids | {self.proxy_pid()}:
            if pid:
                _end(pid)


def _read_pid(path):
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None


def _end(pid, proc=None, timeout=20):
    """SIGTERM ``pid``, then SIGKILL it if it is still there after ``timeout`` s."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return
        if proc is None and not _alive(pid):
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    if proc is not None:
        proc.wait()


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def start_hub(workdir, config="", user=None, env=None, internal_ssl=False):
    """Start a Hub in ``workdir`` with ``config`` appended to the base settings.

    ``user``: run the Hub as this unix user (it must own ``workdir``); default: the caller.
    ``internal_ssl``: with JupyterHub's internal_ssl (certificates in ``workdir/certs``).
    """
    workdir = Path(workdir)
    ports = {k: free_port() for k in ("proxy_port", "hub_port", "api_port")}
    api_token, password = secrets.token_hex(16), secrets.token_hex(8)
    values = dict(
        workdir=workdir,
        chp=CHP,
        api_token=api_token,
        password=password,
        venv_bin=VENV_BIN,
        frontend=FRONTEND,
        api_scheme="https" if internal_ssl else "http",
        **ports,
    )
    if internal_ssl:
        config += INTERNAL_SSL.format(**values)
    text = BASE_CONFIG.format(**values) + "\n" + config + "\n" + ISOLATION.format(**values)
    (workdir / "jupyterhub_config.py").write_text(text)
    cmd = [str(VENV_BIN / "jupyterhub"), "-f", str(workdir / "jupyterhub_config.py")]
    if user:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--"] + cmd
    full_env = {
        **os.environ,
        "PATH": NEWCOMER_PATH,
        "CONFIGPROXY_AUTH_TOKEN": secrets.token_hex(16),
        **(env or {}),
    }
    log = open(workdir / "hub.log", "wb")
    proc = subprocess.Popen(cmd, cwd=workdir, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    hub = Hub(workdir, proc, ports, api_token, password, internal_ssl)
    try:
        wait_for(lambda: _hub_up(hub), 60, "JupyterHub to answer")
    except Exception:
        hub.stop()
        sys.stderr.write(hub.log()[-5000:])
        raise
    return hub


def _hub_up(hub):
    if hub.proc.poll() is not None:
        raise RuntimeError(f"JupyterHub exited with {hub.proc.returncode}:\n{hub.log()[-3000:]}")
    try:
        return hub.api("GET", "/").status_code == 200
    except requests.ConnectionError:
        return False


def dumps(value):
    """A Python literal for config snippets."""
    return json.dumps(value)
