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
import json
import os
import pwd
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import websockets

from carta_standin.icd import EventType
from helpers.carta import file_list, register
from helpers.client import connect, cookie_header, open_carta
from helpers.hub import SAME_USER_CARTA
from helpers.ports import wait_for

OWNER, INTRUDER, GRANTEE = "owner", "intruder", "grantee"
CONFIG = SAME_USER_CARTA + f"""
c.JupyterHub.load_roles.append({{
    "name": "carta-share-{OWNER}",
    "users": ["{GRANTEE}"],
    "scopes": ["access:servers!server={OWNER}/"],
}})
"""

# Run as another unix user (setpriv): tries the owner's backend and wrapper ports directly.
PROBE = r'''
import json, os, socket, struct, sys, time, urllib.error, urllib.request

args = json.loads(sys.argv[1])
out = {"uid": os.getuid()}


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **k):
        return None


def http(url, headers=None):
    request = urllib.request.Request(url, headers=headers or {})
    try:
        r = urllib.request.build_opener(NoRedirect).open(request, timeout=10)
        return [r.status, r.read(2000).decode(errors="replace")]
    except urllib.error.HTTPError as e:
        return [e.code, e.headers.get("Location") or ""]
    except OSError as e:
        return [0, str(e)]


def websocket(port, path, headers=""):
    """Upgrade, then REGISTER_VIEWER (ICD 30) as the frontend does: what comes back."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   f"Sec-WebSocket-Version: 13\r\n{headers}\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            if not chunk:
                break
            head += chunk
        status = head.split(b"\r\n", 1)[0].decode(errors="replace")
        if " 101 " not in status + " ":
            return {"status": status, "ack": False}
        payload = struct.pack("<HHI", 1, 30, 1) + b"\x1d\x05\x00\x00\x00"
        mask = b"\x01\x02\x03\x04"
        s.sendall(bytes([0x82, 0x80 | len(payload)]) + mask +
                  bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
        data, deadline = head.split(b"\r\n\r\n", 1)[1], time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(4096)
            except socket.timeout:
                break
            if not chunk:
                break
            data += chunk
        # a binary frame holding REGISTER_VIEWER_ACK (event 18) with success = true
        size = data[1] & 0x7F if len(data) > 1 else 0
        start = 2 + {126: 2, 127: 8}.get(size, 0)
        ack = len(data) > start + 8 and data[0] == 0x82 and \
            struct.unpack("<H", data[start:start + 2])[0] == 18 and \
            b"\x10\x01" in data[start + 8:start + 16]
        return {"status": status, "ack": ack}
    except OSError as e:
        return {"status": str(e), "ack": False}


for name, port in args["backends"].items():
    base = f"http://127.0.0.1:{port}"
    out[f"backend {name}"] = {
        "no token": http(base + "/api/database/preferences"),
        "guessed header": http(base + "/api/database/preferences",
                               {"carta-auth-token": "guessed"}),
        "guessed bearer": http(base + "/api/database/preferences",
                               {"Authorization": "Bearer guessed"}),
        "websocket no token": websocket(port, "/"),
        "websocket guessed": websocket(port, "/?token=guessed"),
    }
for name, (port, prefix) in args["wrappers"].items():
    base = f"http://127.0.0.1:{port}{prefix}"
    out[f"wrapper {name}"] = {
        "page": http(base),
        "api": http(base + "api/database/preferences"),
        "forged user header": http(base + "api/database/preferences",
                                   {"X-Forwarded-User": name, "Remote-User": name}),
        "websocket": websocket(port, prefix),
    }
if args.get("control"):  # the same requests WITH the right token: the probe can tell success
    port, token = args["control"]
    out["control"] = {
        "http": http(f"http://127.0.0.1:{port}/api/database/preferences",
                     {"carta-auth-token": token})[0],
        "websocket": websocket(port, f"/?token={token}")["ack"],
    }
for pid in args["pids"]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            out[f"environ {pid}"] = "READ: " + str(b"CARTA_AUTH_TOKEN" in f.read())
    except OSError as e:
        out[f"environ {pid}"] = type(e).__name__
print(json.dumps(out))
'''


def probe_as(user, backends, wrappers, pids, folder, control=None):
    """Run :data:`PROBE` as unix ``user``; ``backends``/``wrappers``: {label: port/(port,
    prefix)}; ``pids``: processes whose environment it tries to read; ``control``: (port,
    token) of a backend to reach with its token, proving the probe detects success."""
    script = Path(folder) / "carta-attack-probe.py"
    script.write_text(PROBE)
    script.chmod(0o644)
    arg = json.dumps({"backends": backends, "wrappers": wrappers, "pids": pids,
                      "control": control})
    r = subprocess.run(["setpriv", f"--reuid={user}", f"--regid={pwd.getpwnam(user).pw_gid}", "--init-groups", "--",
                        sys.executable, str(script), arg],
                       capture_output=True, text=True, timeout=120, cwd="/")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def assert_refused(found):
    """Every attempt of the probe failed to reach CARTA."""
    for target, attempts in found.items():
        if target.startswith("backend"):
            for what, (status, _) in ((k, v) for k, v in attempts.items() if "websocket" not in k):
                assert status == 403, (target, what, status)
            for what in ("websocket no token", "websocket guessed"):
                assert not attempts[what]["ack"], (target, what, attempts[what])
        elif target.startswith("wrapper"):
            for what in ("page", "api", "forged user header"):
                status, location = attempts[what]
                # sent to the Hub's login (OAuth), never CARTA itself
                assert status in (302, 303, 401, 403), (target, what, status)
                assert status >= 400 or "/hub/api/oauth2/authorize" in location, location
            assert " 101 " not in attempts["websocket"]["status"] + " ", attempts["websocket"]
            assert not attempts["websocket"]["ack"]
        elif target.startswith("environ"):
            assert attempts == "PermissionError", (target, attempts)
        elif target == "control":
            assert attempts == {"http": 200, "websocket": True}, attempts


def listening():
    """``[(address, port, pid, uid, command)]`` of every listening TCP socket."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        for command, pid in re.findall(r'\("([^"]+)",pid=(\d+)', line):
            address, port = line.split()[3].rsplit(":", 1)
            try:
                uid = os.stat(f"/proc/{pid}").st_uid
            except OSError:
                continue
            found.append((address.strip("[]"), int(port), int(pid), uid, command))
    return found


def environ(pid):
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(v.split(b"=", 1) for v in raw.split(b"\0") if b"=" in v)


def cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


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
        elif any(a.endswith((b"/carta-hub-singleuser", b"/batchspawner-singleuser"))
                 for a in argv[:2]):
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
    r = owner.post(f"{hub.url}/hub/api/users/{OWNER}/tokens",
                   json={"scopes": [f"read:users!user={OWNER}"], "note": "leaked, limited"},
                   headers={"X-XSRFToken": owner.cookies.get("_xsrf", path="/hub/")})
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    for header in ({"Authorization": f"token {token}"}, {"Authorization": f"Bearer {token}"}):
        r = requests.get(hub.user_url(OWNER, "api/database/preferences"), headers=header,
                         allow_redirects=False)
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
        opening = websockets.connect(url, max_size=None, additional_headers={
            "Cookie": cookie_header(session), "Origin": origin})
    else:
        opening = connect(hub, session, name)
    async with opening as ws:
        event, _, _, ack = await register(ws)
        assert event == EventType.REGISTER_VIEWER_ACK and ack.success
        event, _, _, listing = await file_list(ws)
        return event == EventType.FILE_LIST_RESPONSE and listing.success


def test_direct_connections_from_another_unix_user_are_refused(hub, open_tmp):
    roles = wait_for(lambda: (lambda s: s if set(s.values()) == {"backend", "wrapper"}
                              else None)(sessions_of(hub.workdir / "homes" / OWNER)),
                     20, "the owner's backend and wrapper")
    sockets = [s for s in listening() if s[2] in roles]
    backends = {f"{OWNER}:{port}": port for _, port, pid, _, _ in sockets
                if roles[pid] == "backend"}
    wrappers = {OWNER: (port, f"/user/{OWNER}/") for _, port, pid, _, _ in sockets
                if roles[pid] == "wrapper"}
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
