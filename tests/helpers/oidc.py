"""A real OpenID Connect provider (npm ``oidc-provider``, tests/helpers/oidc_provider.mjs) on
loopback, and a browser-like login through it with requests.

The Hub must know the provider's URLs before it starts and the provider the Hub's callback,
so: ``provider_env(port, client)`` for the Hub's environment, then
``start_oidc_provider(directory, port, client, redirect_uri, accounts)``.
"""

import json
import secrets
import shutil
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import requests

from .hub import PREFIX, _end
from .ports import await_server

SCRIPT = Path(__file__).with_name("oidc_provider.mjs")
MODULES = PREFIX / "node" / "node_modules"


def new_client():
    return {"client_id": "carta-hub", "client_secret": secrets.token_urlsafe(24)}


def provider_env(port, client):
    """oauthenticator's environment variables for this provider and client."""
    issuer = f"http://127.0.0.1:{port}"
    return {
        "OAUTH_CLIENT_ID": client["client_id"],
        "OAUTH_CLIENT_SECRET": client["client_secret"],
        "OAUTH2_AUTHORIZE_URL": f"{issuer}/auth",
        "OAUTH2_TOKEN_URL": f"{issuer}/token",
        "OAUTH2_USERDATA_URL": f"{issuer}/me",
    }


class OIDCProvider:
    def __init__(self, proc, port, log_path):
        self.proc = proc
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path

    def log(self):
        return self.log_path.read_text(errors="replace")

    def stop(self):
        _end(self.proc.pid, self.proc)


def start_oidc_provider(directory, port, client, redirect_uri, accounts):
    """Start the provider; ``accounts``: {login: {"password": .., "claims": {..}}}."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "oidc.json"
    config.write_text(
        json.dumps(
            {
                "modules": str(MODULES),
                "port": port,
                "accounts": accounts,
                "client": {**client, "redirect_uri": redirect_uri},
            }
        )
    )
    log_path = directory / "oidc.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [shutil.which("node"), str(SCRIPT), str(config)], stdout=log, stderr=subprocess.STDOUT
        )
    provider = OIDCProvider(proc, port, log_path)
    return await_server(provider, lambda: _listening(provider), 20, "the OIDC provider to listen")


def _listening(provider):
    if provider.proc.poll() is not None:
        raise RuntimeError(f"oidc provider exited {provider.proc.returncode}:\n{provider.log()}")
    return "listening" in provider.log()


def authorize(hub, login, password):
    """Log in at the provider as a browser would, starting from the Hub's login button.

    Returns (session, callback URL with code and state) without calling the Hub's callback.
    """
    session = requests.Session()
    form = session.get(f"{hub.url}/hub/oauth_login")
    assert "/interaction/" in form.url, form.url
    r = session.post(
        f"{form.url}/login", data={"login": login, "password": password}, allow_redirects=False
    )
    while r.is_redirect and not r.headers["Location"].startswith(f"{hub.url}/hub/oauth_callback"):
        r = session.get(r.headers["Location"], allow_redirects=False)
    if not r.is_redirect:
        raise PermissionError(f"the provider refused {login}: {r.status_code}")
    return session, r.headers["Location"]


def finish(session, callback_url):
    """Call the Hub's OAuth callback; returns the Hub's response (302 when logged in)."""
    return session.get(callback_url, allow_redirects=False)


def callback_params(callback_url):
    return {k: v[0] for k, v in parse_qs(urlparse(callback_url).query).items()}
