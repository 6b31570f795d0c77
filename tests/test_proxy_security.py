"""The proxy in front of a user's backend (CARTA-only servers behind a real Hub +
configurable-http-proxy, stand-in backend ``carta-standin``, NOT CARTA): where it connects,
what it forwards, and what it refuses."""

import asyncio
import contextlib
import json
import os
import pwd
import re
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
import websockets
from carta_standin.icd import EventType
from helpers.carta import file_list, register
from helpers.client import connect, cookie_header, open_carta
from helpers.hub import FRONTEND, SAME_USER_CARTA, VENV_BIN
from helpers.jupyter import start_jupyter
from helpers.ports import wait_for
from helpers.standin import running_standin

STUDENT = "student"

# Where /etc/hosts lists ::1 first (Debian, Ubuntu, RHEL; what Apptainer binds), "localhost"
# resolves to ::1 first. The CARTA-only server runs in its own mount namespace (an
# unprivileged user namespace: the Hub's user cannot mount otherwise) with such a hosts file.
IPV6_FIRST_HOSTS = "::1 localhost\n127.0.0.1 localhost\n"
IN_NAMESPACE = """#!/bin/sh
exec unshare --user --map-current-user --keep-caps --mount -- \\
    sh -c 'mount --bind "$0" /etc/hosts && exec "$1" "$@"' {hosts} {server} "$@"
"""

# Run as another unix user: listens on [::1]:PORT and prints what each connection sends.
LISTENER = r"""
import socket, sys
s = socket.socket(socket.AF_INET6)
s.bind(("::1", int(sys.argv[1])))
s.listen(16)
print("listening", flush=True)
while True:
    conn, _ = s.accept()
    conn.settimeout(2)
    try:
        print(repr(conn.recv(65536)[:300]), flush=True)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nattacker")
    except OSError:
        pass
    conn.close()
"""


def backend_pid(home):
    """The PID of the carta-standin whose HOME is ``home``, or None."""
    home = str(home).encode()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.endswith(b"/carta-standin") for a in argv[:2]) and b"HOME=" + home in env:
            return int(pid)
    return None


def backend_port(hub, name):
    home = hub.workdir / "homes" / name
    pid = wait_for(lambda: backend_pid(home), 20, f"{name}'s backend")
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    (port,) = [
        int(line.split()[3].rsplit(":", 1)[1]) for line in out.splitlines() if f"pid={pid}," in line
    ]
    return pid, port


@contextlib.contextmanager
def listener_as(user, port, folder):
    """Run :data:`LISTENER` as unix ``user`` on [::1]:``port``; yields a list that holds,
    after the block, what it received (one entry per connection)."""
    script = Path(folder) / "carta-ipv6-listener.py"
    script.write_text(LISTENER)
    script.chmod(0o644)
    gid = pwd.getpwnam(user).pw_gid
    proc = subprocess.Popen(
        [
            "setpriv",
            f"--reuid={user}",
            f"--regid={gid}",
            "--clear-groups",
            "--",
            sys.executable,
            str(script),
            str(port),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd="/",
    )
    heard = []
    try:
        assert proc.stdout.readline().strip() == "listening"
        yield heard
    finally:
        proc.kill()
        heard += proc.communicate()[0].splitlines()


async def handshake(hub, session, name):
    async with connect(hub, session, name) as ws:
        event, _, _, ack = await register(ws)
        assert event == EventType.REGISTER_VIEWER_ACK and ack.success
        event, _, _, listing = await file_list(ws)
        return event == EventType.FILE_LIST_RESPONSE and listing.success


@pytest.fixture(scope="module")
def ipv6_first_hub(hub_factory, open_tmp):
    hosts = open_tmp / "hosts"
    hosts.write_text(IPV6_FIRST_HOSTS)
    wrapper = open_tmp / "carta-hub-singleuser-in-namespace"
    wrapper.write_text(IN_NAMESPACE.format(hosts=hosts, server=VENV_BIN / "carta-hub-singleuser"))
    wrapper.chmod(0o755)
    hub = hub_factory(SAME_USER_CARTA + f'\nc.SameUserCartaSpawner.cmd = ["{wrapper}"]\n')
    hub.start_server(STUDENT)
    return hub


def test_backend_http_goes_to_127_0_0_1_even_where_localhost_is_ipv6(ipv6_first_hub, open_tmp):
    """Another local user listening on [::1]:PORT gets neither the token nor the page."""
    hub = ipv6_first_hub
    pid, port = backend_port(hub, STUDENT)
    # the setup is effective: the server's (and backend's) resolver reads ::1 first
    assert Path(f"/proc/{pid}/root/etc/hosts").read_text() == IPV6_FIRST_HOSTS
    with listener_as("nobody", port, open_tmp) as heard:
        session = hub.login(STUDENT)
        page = open_carta(hub, session, STUDENT)
        config = session.get(hub.user_url(STUDENT, "config"))
        prefs = session.put(
            hub.user_url(STUDENT, "api/database/preferences"),
            json={"colormap": "viridis"},
            headers={"Origin": hub.url},
        )
        websocket_works = asyncio.run(handshake(hub, session, STUDENT))
    assert heard == [], heard
    assert page.status_code == 200 and "<title>CARTA</title>" in page.text
    assert config.json()["apiAddress"] == f"/user/{STUDENT}/api"
    assert prefs.status_code == 200 and prefs.json() == {"success": True}
    assert websocket_works


def test_tile_without_the_carta_extension_starts_and_proxies_nothing(open_tmp, hub_unix_user):
    """With carta_hub.server.jupyterlab disabled, /carta/ is not served by jupyter-server-proxy's own
    handler (it would reach the backend at localhost); the tile stays, the log says why."""
    home = open_tmp / "no-extension"
    home.mkdir()
    subprocess.run(["chown", hub_unix_user.pw_name, str(home)], check=True)
    server = start_jupyter(
        home,
        "/user/no-extension/",
        user=hub_unix_user.pw_name,
        args=[
            '--ServerApp.jpserver_extensions={"carta_hub.server.jupyterlab": False}',
            f"--CartaBackend.executable={VENV_BIN / 'carta-standin'}",
            f"--CartaBackend.frontend_folder={FRONTEND}",
        ],
    )
    try:
        info = server.get("server-proxy/servers-info").json()
        assert "carta" in [s["name"] for s in info["server_processes"]]
        page = server.get("carta/", timeout=60)
        assert page.status_code == 404 and "<title>CARTA</title>" not in page.text
        assert backend_pid(home) is None
        assert "jupyter server extension enable carta_hub.server.jupyterlab" in server.log()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def hub(hub_factory):
    hub = hub_factory(SAME_USER_CARTA)
    hub.start_server(STUDENT)
    return hub


@pytest.fixture(scope="module")
def student(hub):
    """The student's browser session, logged in to the Hub and to their server."""
    session = hub.login(STUDENT)
    assert "<title>CARTA</title>" in open_carta(hub, session, STUDENT).text
    return session


# A URL-encoded CR LF in the websocket's path: decoded, it would end the backend's request
# line early and add a header of the URL's choosing.
INJECTION = "%20HTTP/1.1%0d%0aX-Forwarded-For:%20forged%0d%0aX-Pad:"


@pytest.mark.parametrize("path", [INJECTION, "a%00b", "a%09b", "a%7fb", "%C3%A9"])
async def test_control_characters_in_the_websocket_path_are_refused(hub, student, path):
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with connect(hub, student, STUDENT, path):
            pass
    assert refused.value.response.status_code == 400
    assert b"open CARTA from its usual link" in refused.value.response.body
    assert await handshake(hub, student, STUDENT)  # the usual websocket still works


EVIL = "http://evil.example"
CROSS_SITE = [
    {"Origin": EVIL},
    {"Origin": EVIL, "Sec-Fetch-Site": "cross-site"},
    {"Origin": "http://other.127.0.0.1.example", "Sec-Fetch-Site": "same-site"},
    {"Origin": "null", "Sec-Fetch-Site": "cross-site"},
]
UNSAFE = [
    ("PUT", "api/database/preferences", {"colormap": "gray"}),
    ("DELETE", "api/database/preferences", {"keys": ["colormap"]}),
    ("PUT", "api/database/layout", {"layoutName": "evil", "layout": {"a": 1}}),
    ("POST", "api/scripting/action", {"session_id": 0}),
]


def assert_unsafe_methods_refused_cross_site(request, url, same_origin):
    """``request(method, url, **kw)`` with the user's credentials: cross-site writes are
    refused and change nothing; the page's own writes and header-less clients work."""
    prefs = url("api/database/preferences")
    assert request("PUT", prefs, json={"colormap": "viridis"}, headers=same_origin).ok
    for headers in CROSS_SITE:
        for method, path, body in UNSAFE:
            r = request(method, url(path), json=body, headers=headers)
            assert r.status_code == 403, (method, path, headers, r.status_code)
            assert "refuses changes sent by another site" in r.text
    assert request("GET", prefs).json()["preferences"]["colormap"] == "viridis"
    assert request("GET", url("api/database/list/layouts")).json()["layouts"] == []
    r = request(
        "PUT",
        prefs,
        json={"colormap": "inferno"},
        headers={**same_origin, "Sec-Fetch-Site": "same-origin"},
    )
    assert r.status_code == 200, r.text
    assert request("PUT", prefs, json={"colormap": "magma"}).status_code == 200  # no browser
    assert request("GET", prefs).json()["preferences"]["colormap"] == "magma"


def test_cross_site_writes_are_refused_carta_only(hub, student):
    assert_unsafe_methods_refused_cross_site(
        student.request, lambda path: hub.user_url(STUDENT, path), {"Origin": hub.url}
    )


def test_cross_site_writes_are_refused_in_the_tile(open_tmp, hub_unix_user):
    home = open_tmp / "tile-writes"
    home.mkdir()
    subprocess.run(["chown", hub_unix_user.pw_name, str(home)], check=True)
    server = start_jupyter(
        home,
        "/user/tile-writes/",
        user=hub_unix_user.pw_name,
        args=[
            f"--CartaBackend.executable={VENV_BIN / 'carta-standin'}",
            f"--CartaBackend.frontend_folder={FRONTEND}",
        ],
    )
    try:
        browser = requests.Session()  # the login cookie, as a browser holds it
        assert browser.get(f"{server.url}api/status?token={server.token}").ok
        assert browser.cookies
        origin = f"http://127.0.0.1:{server.port}"
        assert_unsafe_methods_refused_cross_site(
            browser.request, lambda path: f"{server.url}carta/{path}", {"Origin": origin}
        )
    finally:
        server.stop()


# Names that carta_backend would turn into paths outside ~/.carta/config/<kind>s/
TRAVERSALS = ["../../../escaped", "..\\..\\x", "../../../.bashrc\u0000", ".", ".."]


def test_object_names_cannot_leave_the_config_folder(hub, student):
    home = hub.workdir / "homes" / STUDENT
    (home / "secret.json").write_text('{"secret": "the owner\'s"}')
    (home / "keep.json").write_text("{}")
    (home / ".bashrc").write_text("# the owner's\n")
    url = lambda path: hub.user_url(STUDENT, path)
    same = {"Origin": hub.url}
    for kind in ("layout", "snippet", "workspace"):
        for name in TRAVERSALS:
            r = student.put(
                url(f"api/database/{kind}"),
                headers=same,
                json={f"{kind}Name": name, kind: {"written": True}},
            )
            assert r.status_code == 400 and "choose another name" in r.text, (kind, name, r.text)
            # a second, harmless name beside the bad one: the backend may read either
            body = f'{{"{kind}Name": "ok", "{kind}Name": {json.dumps(name)}, "{kind}": {{}}}}'
            r = student.put(url(f"api/database/{kind}"), headers=same, data=body)
            assert r.status_code == 400, (kind, name)
        r = student.delete(
            url(f"api/database/{kind}"), headers=same, json={f"{kind}Name": "../../../keep"}
        )
        assert r.status_code == 400
        r = student.get(url(f"api/database/{kind}/..%2F..%2F..%2Fsecret"))
        assert r.status_code == 400 and "secret" not in r.text
    assert sorted(p.name for p in home.iterdir() if p.suffix == ".json" or p.name == ".bashrc") == [
        ".bashrc",
        "keep.json",
        "secret.json",
    ]
    assert (home / ".bashrc").read_text() == "# the owner's\n"
    assert not (home / ".carta" / "escaped.json").exists()


def test_objects_with_ordinary_names_round_trip(hub, student):
    url = lambda path: hub.user_url(STUDENT, path)
    same = {"Origin": hub.url}
    name = "My layout (1) ... é"
    r = student.put(
        url("api/database/layout"),
        headers=same,
        json={"layoutName": name, "layout": {"layoutVersion": 2}},
    )
    assert r.status_code == 200, r.text
    r = student.get(url(f"api/database/layout/{quote(name)}"))
    assert r.status_code == 200 and r.json()["layout"]["layoutVersion"] == 2
    r = student.delete(url("api/database/layout"), headers=same, json={"layoutName": name})
    assert r.status_code == 200, r.text
    assert student.get(url("api/database/list/layouts")).json()["layouts"] == []


def raw_request(port, head):
    """Send a request head to 127.0.0.1:``port``; the answer's status line."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head.encode())
        return s.makefile("rb").readline().decode().strip()


@pytest.mark.parametrize(
    "padding, fields, status",
    [(3800, 1, "200"), (4100, 1, "431"), (10, 46, "200"), (10, 47, "431")],
)
def test_standin_refuses_request_heads_as_uwebsockets_does(tmp_path, padding, fields, status):
    """Over 4 KiB of request line and headers, or over 48 fields: 431, as uWebSockets."""
    with running_standin(tmp_path / "home") as backend:
        extra = "".join(f"X-Field-{i}: {'a' * padding}\r\n" for i in range(fields))
        head = (
            f"GET /api/database/preferences HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"carta-auth-token: {backend.token}\r\n{extra}\r\n"
        )
        assert raw_request(backend.port, head).split()[1] == status


# What a browser sends with the page's calls after opening a long deep link (a few files
# by their full paths): the link is the Referer; the site's other apps add cookies.
DEEP_LINK_QUERY = "files=" + ",".join(
    f"/data/survey/field{i:03}/" + "x" * 180 + ".fits" for i in range(16)
)
BROWSER_HEADERS = {
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "sec-ch-ua": '"Chromium";v="131", "Not_A Brand";v="24", "Google Chrome";v="131"',
    "sec-ch-ua-mobile": "?0",
    "sec-ch-ua-platform": '"Linux"',
    "Accept-Language": "en-GB,en-US;q=0.9,en;q=0.8,de;q=0.7",
    "Sec-Fetch-Site": "same-origin",
    "Sec-Fetch-Mode": "cors",
    "Sec-Fetch-Dest": "empty",
}


async def test_long_deep_link_and_big_cookies_still_work(hub, student):
    assert len(DEEP_LINK_QUERY) > 3000
    for i in range(3):  # cookies of the site's other applications
        student.cookies.set(f"other-app-{i}", "c" * 1200, path="/")
    referer = hub.user_url(STUDENT, "?" + DEEP_LINK_QUERY)
    headers = {**BROWSER_HEADERS, "Referer": referer, "Origin": hub.url}
    page = student.get(referer, headers={**BROWSER_HEADERS, "Sec-Fetch-Mode": "navigate"})
    assert page.status_code == 200 and "<title>CARTA</title>" in page.text
    script = re.search(r'src="(?:\./)?(static/js/[^"]+)"', page.text).group(1)
    for path in (script, "config", "api/database/preferences"):
        r = student.get(hub.user_url(STUDENT, path), headers=headers)
        assert r.status_code == 200, (path, r.status_code)
    r = student.put(
        hub.user_url(STUDENT, "api/database/preferences"),
        headers=headers,
        json={"colormap": "viridis"},
    )
    assert r.status_code == 200, r.text
    url = hub.user_url(STUDENT, "?token=no_auth_configured").replace("http://", "ws://", 1)
    ws_headers = {**BROWSER_HEADERS, "Origin": hub.url, "Cookie": cookie_header(student)}
    async with websockets.connect(url, additional_headers=ws_headers) as ws:
        event, _, _, ack = await register(ws)
    assert event == EventType.REGISTER_VIEWER_ACK and ack.success
