"""A CARTA-only server that ends on its own loses its proxy route at once, not at the Hub's
next poll: until the route goes, another user of the machine could bind the freed port and
receive the student's requests and login cookie. Real Hub + configurable-http-proxy, local
spawner, the stand-in backend ``carta-standin`` (not CARTA)."""

import secrets
import subprocess
import time

import requests
from helpers.hub import SAME_USER_CARTA
from helpers.ports import wait_for
from helpers.procs import processes

PROXY_TOKEN = secrets.token_hex(16)
POLL = 30  # JupyterHub's default Spawner.poll_interval: far longer than the bound tested
INITIAL_TIMEOUT = 4  # the backend exits this long after starting when no client connects
NAME = "leaves"


def routes(hub):
    r = requests.get(
        f"{hub.proxy_api}/api/routes", timeout=5, headers={"Authorization": f"token {PROXY_TOKEN}"}
    )
    r.raise_for_status()
    return r.json()


def test_route_goes_when_the_backend_exits(hub_factory, hub_unix_user):
    """The backend's initial_timeout (as exit_timeout, or the end of a session) ends the
    server; the Hub removes its route within about a second and /user/NAME/ is the Hub's."""
    hub = hub_factory(
        SAME_USER_CARTA
        + f"""
c.Spawner.poll_interval = {POLL}
c.CartaBackend.initial_timeout = {INITIAL_TIMEOUT}
""",
        env={"CONFIGPROXY_AUTH_TOKEN": PROXY_TOKEN},
    )
    home = hub.workdir / "homes" / NAME
    home.mkdir(parents=True)
    subprocess.run(["chown", hub_unix_user.pw_name, str(home)], check=True)
    session = hub.login(NAME)
    hub.start_server(NAME)
    assert f"/user/{NAME}" in routes(hub)

    wait_for(
        lambda: not processes(home, "/carta-hub-singleuser"),
        INITIAL_TIMEOUT + 10,
        "the server to exit with its backend",
        interval=0.05,
    )
    ended = time.monotonic()
    wait_for(lambda: f"/user/{NAME}" not in routes(hub), POLL, "the route to go", interval=0.05)
    gone = time.monotonic() - ended
    print(f"route gone {gone:.2f} s after the server exited")
    assert gone < 2, gone
    assert "exited (exit or initial timeout)" in hub.log()
    assert not hub.server(NAME)

    page = session.get(hub.user_url(NAME))  # the Hub's page, not a dead (or foreign) port
    assert page.status_code == 424, page.status_code
    assert "Server not running" in page.text and f"/hub/spawn/{NAME}" in page.text
