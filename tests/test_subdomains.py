"""Per-user origins (JupyterHub's subdomain_host), as the shipped Slurm and Kubernetes configs
set them: on a real Hub + configurable-http-proxy with two users' CARTA-only servers, each
user's CARTA is served from its own origin, a page of another user's origin cannot open it,
and another user's cookies do not work there.

The test Hub speaks plain HTTP on loopback; the hosts NAME.hub.localtest resolve to 127.0.0.1
in this process only (``socket.getaddrinfo`` is patched), so the browser's requests carry
the per-user Host and Origin headers a real site's would.
"""

import copy
import secrets
import socket
from pathlib import Path
from urllib.parse import urlparse

import pytest
import requests
import websockets
import yaml
from carta_standin.icd import EventType
from helpers.carta import file_list, register
from helpers.client import cookie_header
from helpers.hub import SAME_USER_CARTA
from traitlets.config import Config, PyFileConfigLoader

ROOT = Path(__file__).parent.parent
DOMAIN = "hub.localtest"
USERS = ["alice", "bob"]
PROXY_TOKEN = secrets.token_hex(16)
# A subdomain_host as the shipped configs set it, in plain HTTP on the test Hub's port, which
# the config file reads from its own ISOLATION block (tests/helpers/hub.py, appended after).
SUBDOMAINS = f"""
import re
_port = re.search(r'bind_url = "http://127.0.0.1:(\\d+)"', open(__file__).read()).group(1)
c.JupyterHub.subdomain_host = f"http://{DOMAIN}:{{_port}}"
"""


def shipped_slurm_config():
    """jupyterhub_config/slurm-common.py as the Hub loads it (its subconfigs left out)."""
    loader = PyFileConfigLoader("slurm-common.py", str(ROOT / "jupyterhub_config"))
    loader.load_subconfig = lambda *args, **kwargs: None
    return loader.load_config()


@pytest.mark.parametrize(
    "config",
    [
        shipped_slurm_config(),
        Config(yaml.safe_load((ROOT / "helm-values" / "base.yaml").read_text())["hub"]["config"]),
    ],
    ids=["slurm", "kubernetes"],
)
def test_shipped_configs_give_each_user_an_origin(config):
    url = urlparse(config.JupyterHub.get("subdomain_host", ""))
    assert url.scheme == "https" and url.hostname and url.hostname.count(".") >= 2, url
    assert not url.path.strip("/")


@pytest.fixture(scope="module")
def resolve_localtest():
    """NAME.hub.localtest and hub.localtest resolve to 127.0.0.1 in this process."""
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if isinstance(host, str) and (host == DOMAIN or host.endswith("." + DOMAIN)):
            host = "127.0.0.1"
        return real(host, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", getaddrinfo)
        yield


@pytest.fixture(scope="module")
def hub(hub_factory, resolve_localtest):
    hub = hub_factory(SAME_USER_CARTA + SUBDOMAINS, env={"CONFIGPROXY_AUTH_TOKEN": PROXY_TOKEN})
    for name in USERS:
        hub.start_server(name)
    return hub


def origin(url):
    parsed = urlparse(url)
    return f"{parsed.scheme}://{parsed.netloc}"


@pytest.fixture(scope="module")
def hub_origin(hub):
    return f"http://{DOMAIN}:{urlparse(hub.url).port}"


@pytest.fixture(scope="module")
def sessions(hub, hub_origin):
    """Each user logged in at the Hub's origin, with the CARTA page the Hub sends them to."""
    at_origin = copy.copy(hub)
    at_origin.url = hub_origin
    result = {}
    for name in USERS:
        session = at_origin.login(name)
        page = session.get(f"{hub_origin}/hub/user/{name}/")
        assert page.status_code == 200 and "<title>CARTA</title>" in page.text, page.text[-500:]
        result[name] = session
        session.carta_url = page.url.split("?")[0]
    return result


def test_each_user_has_an_origin(hub_origin, sessions):
    origins = {origin(hub_origin)} | {origin(s.carta_url) for s in sessions.values()}
    assert len(origins) == 1 + len(USERS), origins
    for name, session in sessions.items():
        assert session.carta_url == f"http://{name}.{urlparse(hub_origin).netloc}/user/{name}/"


def carta_ws(session, cookies_of, page_origin, **headers):
    """A websocket to the CARTA of ``session`` with the cookies of session ``cookies_of``,
    opened by a page of ``page_origin``."""
    headers = {"Cookie": cookie_header(cookies_of), "Origin": page_origin, **headers}
    return websockets.connect(
        session.carta_url.replace("http://", "ws://", 1), additional_headers=headers
    )


def test_user_servers_are_routed_by_host(hub, sessions):
    r = requests.get(
        f"{hub.proxy_api}/api/routes", timeout=10, headers={"Authorization": f"token {PROXY_TOKEN}"}
    )
    routes = r.json()
    for name in USERS:
        assert f"/{name}.{DOMAIN}/user/{name}" in routes, sorted(routes)
        assert f"/user/{name}" not in routes


@pytest.mark.parametrize("fetch_site", [None, "same-origin"])
async def test_carta_at_own_origin(sessions, fetch_site):
    alice = sessions["alice"]
    extra = {"Sec-Fetch-Site": fetch_site} if fetch_site else {}
    async with carta_ws(alice, alice, origin(alice.carta_url), **extra) as ws:
        event, _, _, ack = await register(ws)
        assert event == EventType.REGISTER_VIEWER_ACK and ack.success
        event, _, _, listing = await file_list(ws)
    assert event == EventType.FILE_LIST_RESPONSE and listing.success


@pytest.mark.parametrize("page", ["bob", "hub"])
@pytest.mark.parametrize("fetch_site", [None, "same-site"])
async def test_page_of_another_origin_cannot_open_the_websocket(
    hub_origin, sessions, page, fetch_site
):
    """A page bob serves from his server (or a page of the Hub) opens alice's CARTA with
    alice's cookies, as her browser would send them: refused by the origin check. With one
    origin for all, these pages had alice's CARTA's origin and got in."""
    alice = sessions["alice"]
    page_origin = origin(sessions["bob"].carta_url if page == "bob" else hub_origin)
    extra = {"Sec-Fetch-Site": fetch_site} if fetch_site else {}
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with carta_ws(alice, alice, page_origin, **extra):
            pass
    assert refused.value.response.status_code == 403


def test_other_users_cookies_do_not_work_at_the_origin(sessions):
    url = sessions["alice"].carta_url
    r = requests.get(
        url, headers={"Cookie": cookie_header(sessions["bob"])}, allow_redirects=False, timeout=10
    )
    assert r.status_code == 302 and "/hub/api/oauth2/authorize" in r.headers["Location"], r
    r = sessions["bob"].get(url, timeout=10)  # bob's login at the Hub: not alice's server
    assert r.status_code == 403 and "<title>CARTA</title>" not in r.text, (r.status_code, r.url)


async def test_other_users_cookies_do_not_open_the_websocket(sessions):
    alice = sessions["alice"]
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with carta_ws(alice, sessions["bob"], origin(alice.carta_url)):
            pass
    assert refused.value.response.status_code in (302, 403)


def test_browser_keeps_each_servers_cookie_to_its_origin(sessions):
    """The server cookie alice's CARTA set is bound to her host: a browser sends it to no
    other user's origin (nor to the Hub's)."""
    cookies = [c for c in sessions["alice"].cookies if c.name.startswith("jupyterhub-user-")]
    assert cookies and {c.domain for c in cookies} == {f"alice.{DOMAIN}"}, cookies
    assert not any(c.domain_specified for c in cookies)
