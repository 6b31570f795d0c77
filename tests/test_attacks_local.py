"""Attacks on CARTA sessions behind a real Hub + configurable-http-proxy (CARTA-only servers,
stand-in backend ``carta-standin``, NOT CARTA). Each test fails if the attack works.

- Another Hub user opens the owner's CARTA URLs (pages, API, websocket), with their own
  cookies or with a token of the owner that lacks the access scope: refused. A user the Hub
  grants ``access:servers!server=owner/`` gets in.
- A page of another site opens the owner's websocket with the owner's cookies: refused.
- Another local unix user connects straight to the backend's or the wrapper's port, without
  or with a guessed token, and tries to read the backend's token from /proc: refused.
"""

import asyncio
import os
import re

import pytest
import requests
import websockets
from carta_standin.icd import EventType
from helpers.carta import file_list, register
from helpers.client import connect, cookie_header, open_carta
from helpers.hub import SAME_USER_CARTA
from helpers.ports import wait_for
from helpers.probe import assert_refused, probe_as
from helpers.procs import cmdline, environ, listening

OWNER, INTRUDER, GRANTEE = "owner", "intruder", "grantee"
CONFIG = (
    SAME_USER_CARTA
    + f"""
c.JupyterHub.load_roles.append({{
    "name": "carta-share-{OWNER}",
    "users": ["{GRANTEE}"],
    "scopes": ["access:servers!server={OWNER}/"],
}})
"""
)


def sessions_of(prefix_home):
    """``{pid: role}`` of the backends and wrappers whose HOME is under ``prefix_home``."""
    found = {}
    for pid in map(int, filter(str.isdigit, os.listdir("/proc"))):
        home = environ(pid).get(b"HOME", b"").decode()
        argv = cmdline(pid)
        if not home.startswith(str(prefix_home)):
            continue
        if any(a.endswith(b"/carta-standin") for a in argv[:2]):
            found[pid] = "backend"
        elif any(
            a.endswith((b"/carta-hub-singleuser", b"/batchspawner-singleuser")) for a in argv[:2]
        ):
            found[pid] = "wrapper"
    return found


@pytest.fixture(scope="module")
def hub(hub_factory, hub_unix_user):
    hub = hub_factory(CONFIG)
    for name in (OWNER, GRANTEE, INTRUDER):
        hub.start_server(name) if name == OWNER else hub.api("POST", f"/users/{name}")
    return hub


def test_other_user_is_refused_pages_api_and_websocket(hub):
    intruder = hub.login(INTRUDER)
    for path in ("", "config", "api/database/preferences", "api/database/list/layouts"):
        r = intruder.get(hub.user_url(OWNER, path))
        assert r.status_code == 403, (path, r.status_code)
        assert "<title>CARTA</title>" not in r.text and "preferences" not in r.text
    r = intruder.put(hub.user_url(OWNER, "api/database/preferences"), json={"colormap": "x"})
    assert r.status_code in (302, 403), r.status_code
    with pytest.raises(websockets.InvalidStatus) as refused:
        asyncio.run(_ws_handshake(hub, intruder, OWNER))
    assert refused.value.response.status_code in (302, 403)


def test_owner_token_without_access_scope_is_refused(hub):
    owner = hub.login(OWNER)
    owner.get(f"{hub.url}/hub/token")
    r = owner.post(
        f"{hub.url}/hub/api/users/{OWNER}/tokens",
        json={"scopes": [f"read:users!user={OWNER}"], "note": "leaked, limited"},
        headers={"X-XSRFToken": owner.cookies.get("_xsrf", path="/hub/")},
    )
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    for header in ({"Authorization": f"token {token}"}, {"Authorization": f"Bearer {token}"}):
        r = requests.get(
            hub.user_url(OWNER, "api/database/preferences"), headers=header, allow_redirects=False
        )
        assert r.status_code in (302, 403), r.status_code
        assert "preferences" not in r.text


def test_granted_user_gets_in(hub):
    grantee = hub.login(GRANTEE)
    page = open_carta(hub, grantee, OWNER)
    # JupyterHub asks someone else's visitor to confirm once ("Authorize access")
    assert page.status_code == 200 and "Authorize" in page.text
    form = re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', page.text)
    page = grantee.post(page.url, data=form)
    assert page.status_code == 200 and "<title>CARTA</title>" in page.text
    r = grantee.get(hub.user_url(OWNER, "api/database/preferences"))
    assert r.status_code == 200 and "preferences" in r.json()
    assert asyncio.run(_ws_handshake(hub, grantee, OWNER))


def test_cross_site_websocket_with_owner_cookies_is_refused(hub):
    owner = hub.login(OWNER)
    open_carta(hub, owner, OWNER)
    assert asyncio.run(_ws_handshake(hub, owner, OWNER))  # the owner's own page works
    with pytest.raises(websockets.InvalidStatus) as refused:
        asyncio.run(_ws_handshake(hub, owner, OWNER, origin="http://evil.example"))
    assert refused.value.response.status_code == 403


async def _ws_handshake(hub, session, name, origin=None):
    """REGISTER_VIEWER and a file list through CHP, as a browser page at ``origin``."""
    if origin:
        url = hub.user_url(name).replace("http://", "ws://", 1)
        opening = websockets.connect(
            url,
            max_size=None,
            additional_headers={"Cookie": cookie_header(session), "Origin": origin},
        )
    else:
        opening = connect(hub, session, name)
    async with opening as ws:
        event, _, _, ack = await register(ws)
        assert event == EventType.REGISTER_VIEWER_ACK and ack.success
        event, _, _, listing = await file_list(ws)
        return event == EventType.FILE_LIST_RESPONSE and listing.success


def test_direct_connections_from_another_unix_user_are_refused(hub, open_tmp):
    roles = wait_for(
        lambda: (lambda s: s if set(s.values()) == {"backend", "wrapper"} else None)(
            sessions_of(hub.workdir / "homes" / OWNER)
        ),
        20,
        "the owner's backend and wrapper",
    )
    sockets = [s for s in listening() if s[2] in roles]
    backends = {
        f"{OWNER}:{port}": port for _, port, pid, _, _ in sockets if roles[pid] == "backend"
    }
    wrappers = {
        OWNER: (port, f"/user/{OWNER}/")
        for _, port, pid, _, _ in sockets
        if roles[pid] == "wrapper"
    }
    assert backends and wrappers, sockets
    for address, port, pid, _, _ in sockets:  # nothing of the session listens beyond loopback
        assert address == "127.0.0.1", (address, port, roles[pid])
    for pid in roles:  # the token is never on a command line (world-readable)
        assert not any(b"CARTA_AUTH_TOKEN" in a or b"token" in a.lower() for a in cmdline(pid))
    assert any(b"CARTA_AUTH_TOKEN" in k for pid in roles for k in environ(pid))
    (backend,) = [pid for pid, role in roles.items() if role == "backend"]
    control = (next(iter(backends.values())), environ(backend)[b"CARTA_AUTH_TOKEN"].decode())
    found = probe_as("nobody", backends, wrappers, list(roles), open_tmp, control)
    assert "control" in found
    assert found["uid"] == 65534
    assert_refused(found)
