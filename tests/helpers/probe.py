"""A probe run as another unix user (setpriv) against a student's backend and wrapper ports and
their environment in /proc: tests/test_attacks_local.py and tests/test_attacks_slurm.py."""

import json
import pwd
import subprocess
import sys
from pathlib import Path

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
    arg = json.dumps({"backends": backends, "wrappers": wrappers, "pids": pids, "control": control})
    r = subprocess.run(
        [
            "setpriv",
            f"--reuid={user}",
            f"--regid={pwd.getpwnam(user).pw_gid}",
            "--init-groups",
            "--",
            sys.executable,
            str(script),
            arg,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
    )
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
