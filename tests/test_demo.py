"""The local demo (`make demo` = jupyterhub_config/demo.py): PAM login as the demo account it
creates, a CARTA-only server running AS that account, the stand-in backend announced, a
sample cube in the account's home; and `make demo` itself, run as the README says from a
newcomer's shell."""

import json
import math
import os
import pwd
import re
import secrets
import struct
import subprocess
from importlib.metadata import distribution
from pathlib import Path
from urllib.parse import quote, urljoin, urlparse

import pytest
import requests
from carta_standin.icd import FileType
from helpers.carta import file_list, register
from helpers.client import connect, open_carta
from helpers.hub import NEWCOMER_PATH, PREFIX, SAME_USER_CARTA, Hub, _end, _read_pid
from helpers.ports import free_port, wait_for
from helpers.procs import backend_sockets

from carta_hub.hub.samplecube import sample_cube

REPO = Path(__file__).parent.parent
DEMO = REPO / "jupyterhub_config" / "demo.py"
ACCOUNT = "carta-demo"
SAMPLE = "sample-cube.fits"


@pytest.fixture(scope="module")
def demo_account():
    """Remove the demo account after this module's tests, unless it was there before them:
    then give it back its password (the tests' demo sets one of its own)."""
    shadow = subprocess.run(["getent", "shadow", ACCOUNT], capture_output=True, text=True)
    yield
    if shadow.returncode:
        subprocess.run(["userdel", "--remove", ACCOUNT], check=False, capture_output=True)
    else:
        subprocess.run(["usermod", "-p", shadow.stdout.split(":")[1], ACCOUNT], check=True)


@pytest.fixture(scope="module")
def demo(demo_account, hub_factory):  # the account goes after the Hub (its servers)
    return hub_factory(
        f'load_subconfig("{DEMO}")\n', user=None, env={"CARTA_HUB_DEMO_DIR": "{workdir}/demo"}
    )


async def test_demo_account_gets_carta_as_itself(demo):
    password = (demo.workdir / "demo" / f"{ACCOUNT}.password").read_text()
    assert "STAND-IN" in demo.log() and password in demo.log()
    session = demo.login(ACCOUNT, password)
    demo.start_server(ACCOUNT)
    assert "<title>CARTA</title>" in open_carta(demo, session, ACCOUNT).text
    async with connect(demo, session, ACCOUNT) as ws:
        assert (await register(ws))[3].success
        listing = (await file_list(ws))[3]
    assert listing.success
    assert (SAMPLE, FileType.FITS) in {(f.name, f.type) for f in listing.files}
    uid = pwd.getpwnam(ACCOUNT).pw_uid
    mine = wait_for(
        lambda: [s for s in backend_sockets() if os.stat(f"/proc/{s[2]}").st_uid == uid],
        10,
        "carta-demo's backend",
    )
    assert {address for address, _, _ in mine} == {"127.0.0.1"}


def test_demo_refuses_a_wrong_password(demo):
    with pytest.raises(PermissionError):
        demo.login(ACCOUNT, "wrong")


def test_the_printed_password_works_after_the_accounts_changed(demo, hub_factory):
    """Another start of the demo logs in with the password it prints, also when the
    account's password was changed since (as this module's own demo did to a newcomer's)."""
    folder = demo.workdir / "demo"
    subprocess.run(["chpasswd"], input=f"{ACCOUNT}:{secrets.token_urlsafe(12)}", text=True)
    again = hub_factory(
        f'load_subconfig("{DEMO}")\n', user=None, env={"CARTA_HUB_DEMO_DIR": str(folder)}
    )
    password = (folder / f"{ACCOUNT}.password").read_text()
    assert password in again.log()
    again.login(ACCOUNT, password)


def test_the_sample_cube_belongs_to_the_account(demo):
    user = pwd.getpwnam(ACCOUNT)
    path = Path(user.pw_dir) / SAMPLE
    assert (path.stat().st_uid, path.stat().st_gid) == (user.pw_uid, user.pw_gid)
    assert path.read_bytes() == sample_cube()


# --- the sample cube, read back as a FITS reader would ---


def header_cards(data):
    """{keyword: value text} of the primary header, and the header's length in bytes."""
    cards = {}
    for offset in range(0, len(data), 80):
        card = data[offset : offset + 80].decode("ascii")
        keyword = card[:8].rstrip()
        if keyword == "END":
            return cards, -(-(offset + 80) // 2880) * 2880
        assert card[8:10] == "= ", card
        cards[keyword] = card[10:].split(" / ")[0].strip()
    raise AssertionError("no END card")


def test_sample_cube_is_a_valid_fits_cube():
    data = sample_cube(nx=32, ny=24, channels=5)
    cards, header_length = header_cards(data)
    assert list(cards)[:6] == ["SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3"]
    assert data[:30] == b"SIMPLE  =                    T"  # logical T in column 30
    assert [cards[k] for k in ("BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3")] == [
        "-32",
        "3",
        "32",
        "24",
        "5",
    ]
    assert [cards[k] for k in ("CTYPE1", "CTYPE2", "CTYPE3", "BUNIT")] == [
        "'RA---SIN'",
        "'DEC--SIN'",
        "'FREQ    '",
        "'Jy/beam '",
    ]
    for key in ("CRVAL", "CDELT", "CRPIX"):
        for axis in "123":
            float(cards[key + axis])
    assert set(data[len(cards) * 80 + 80 : header_length]) == {ord(" ")}
    pixels = 32 * 24 * 5
    assert len(data) == header_length + -(-pixels * 4 // 2880) * 2880
    values = struct.unpack(f">{pixels}f", data[header_length : header_length + pixels * 4])
    assert all(math.isfinite(v) for v in values)
    assert set(data[header_length + pixels * 4 :]) <= {0}
    plane = 32 * 24
    peaks = [max(range(plane), key=lambda i, k=k: values[k * plane + i]) for k in range(5)]
    assert len(set(peaks)) == 5  # the source moves from channel to channel


# --- a missing server command ---


def spawn_from_page(hub, session, name, timeout=90):
    """Start ``name``'s server as a browser does: /hub/spawn, then the spawn-pending page
    until it sends the browser on to the server. Returns the last page (status 200: started)."""
    r = session.get(f"{hub.url}/hub/spawn/{quote(name)}", allow_redirects=False)
    pending = f"/hub/spawn-pending/{quote(name)}"

    def done():
        nonlocal r
        if r.status_code >= 400 or (
            r.status_code == 302 and not urlparse(r.headers["Location"]).path.startswith(pending)
        ):
            return True
        r = session.get(hub.url + pending, allow_redirects=False)
        return False

    wait_for(done, timeout, f"{name}'s spawn to end", interval=0.5)
    return r if r.status_code >= 400 else session.get(urljoin(hub.url, r.headers["Location"]))


def test_an_unrunnable_server_command_is_a_clear_error_on_the_spawn_page(hub_factory, tmp_path):
    # the bug: a folder on the Hub's PATH that the user cannot enter (root's, here the
    # test's 0700 tmp_path) made the spawn a "500: Unhandled error starting server"
    hub = hub_factory(
        SAME_USER_CARTA + 'c.SameUserCartaSpawner.cmd = ["my-carta-server"]\n',
        env={"PATH": f"{tmp_path}:{NEWCOMER_PATH}"},
    )
    page = spawn_from_page(hub, hub.login("ann"), "ann")
    assert page.status_code == 500
    text = page.text.replace("&#39;", "'")
    assert "Unhandled error" not in text
    assert (
        "The server command my-carta-server cannot be run as ann (Permission denied, "
        "looked up on the Hub's PATH). Set c.SameUserCartaSpawner.cmd" in text
    )
    assert hub.proc.poll() is None


# --- `make demo` as the README says ---


def editable_install():
    """The venv holds this checkout as an editable install (a developer's), which the
    demo's `make install` would replace by a copy."""
    url = json.loads(distribution("carta-hub").read_text("direct_url.json") or "{}")
    return url.get("dir_info", {}).get("editable") and url.get("url") == REPO.resolve().as_uri()


SHELLS = {  # how a newcomer's shell calls make
    "root shell": ["env", "-i", f"PATH={NEWCOMER_PATH}", "HOME=/root", "LANG=C.UTF-8"],
    # sudo (here from root) resets the environment and sets its secure_path
    "sudo": ["env", "-i", "PATH=/usr/bin:/bin", "HOME=/root", "LANG=C.UTF-8", "sudo"],
}


class MakeDemo(Hub):
    """`make demo` in a subprocess, on free ports, with its state in ``state``."""

    def __init__(self, state, shell):
        ports = {k: free_port() for k in ("proxy_port", "hub_port", "api_port")}
        # make passes variables given on its command line on to the recipe's environment
        variables = [
            f"CARTA_HUB_DEMO_DIR={state}",
            f"CARTA_HUB_DEMO_PORT={ports['proxy_port']}",
            f"CARTA_HUB_DEMO_HUB_PORT={ports['hub_port']}",
            f"CARTA_HUB_DEMO_API_PORT={ports['api_port']}",
            f"CARTA_HUB_PREFIX={PREFIX}",
        ]
        skip_install = ["-o", "install"] if editable_install() else []
        with open(state / "make.log", "wb") as log:  # the child keeps its own copy
            proc = subprocess.Popen(
                [*SHELLS[shell], "make", *skip_install, "demo", *variables],
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        super().__init__(state, proc, ports, "", "")
        self.servers = set()

    def log(self):
        return (self.workdir / "make.log").read_text(errors="replace")

    def wait_up(self, timeout):
        def up():
            if self.proc.poll() is not None:
                raise RuntimeError(f"make demo exited with {self.proc.returncode}:\n{self.log()}")
            found = re.search(rf"log in as {ACCOUNT} with password (\S+)", self.log())
            self.password = found and found.group(1)
            return (
                self.password and self.proxy_pid() and b"Sign in" in _get(self.url + "/hub/login")
            )

        try:
            wait_for(up, timeout, "make demo's Hub to answer", interval=0.5)
        except TimeoutError as e:
            raise TimeoutError(f"{e}; its output:\n{self.log()[-5000:]}") from None

    def stop(self):
        """End the Hub (it stops the servers and its proxy), make, any proxy or server left."""
        proxies = {self.proxy_pid()}
        for pid in (_read_pid(self.workdir / "jupyterhub.pid"), self.proc.pid):
            if pid:
                _end(pid, self.proc if pid == self.proc.pid else None)
        for pid in (proxies | {self.proxy_pid()} | self.servers) - {None}:
            _end(pid)


def _get(url):
    try:
        return requests.get(url, timeout=5).content
    except requests.ConnectionError:
        return b""


def server_pids(uid):
    """carta-hub-singleuser processes of ``uid``."""
    found = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            owner = os.stat(f"/proc/{pid}").st_uid
        except OSError:
            continue
        if owner == uid and any(a.endswith(b"/carta-hub-singleuser") for a in argv[:2]):
            found.add(int(pid))
    return found


@pytest.mark.parametrize("shell", list(SHELLS))
async def test_make_demo_from_a_newcomers_shell_serves_carta(shell, tmp_path, demo_account):
    state = tmp_path / "demo"
    state.mkdir()
    demo = MakeDemo(state, shell)
    try:
        demo.wait_up(900 if not editable_install() else 120)  # dev/install.sh: pip install .
        session = demo.login(ACCOUNT)
        page = spawn_from_page(demo, session, ACCOUNT)
        demo.servers |= server_pids(pwd.getpwnam(ACCOUNT).pw_uid)
        assert page.status_code == 200 and "<title>CARTA</title>" in page.text, page.text
        assert "<title>CARTA</title>" in open_carta(demo, session, ACCOUNT).text
        async with connect(demo, session, ACCOUNT) as ws:
            assert (await register(ws))[3].success
            listing = (await file_list(ws))[3]
        assert (SAMPLE, FileType.FITS) in {(f.name, f.type) for f in listing.files}
    finally:
        demo.stop()
