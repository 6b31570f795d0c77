"""The local demo (`make demo` = jupyterhub_config/demo.py): PAM login as the demo account it
creates, a CARTA-only server running AS that account, the stand-in backend announced."""

import os
import pwd
import subprocess
from pathlib import Path

import pytest

from helpers.carta import file_list, register
from helpers.client import connect, open_carta
from helpers.ports import wait_for
from test_carta_only import backend_sockets

DEMO = Path(__file__).parent.parent / "jupyterhub_config" / "demo.py"


@pytest.fixture(scope="module")
def demo(hub_factory):
    hub = hub_factory(f'load_subconfig("{DEMO}")\n', user=None,
                      env={"CARTA_HUB_DEMO_DIR": "{workdir}/demo"})
    yield hub
    subprocess.run(["userdel", "--remove", "carta-demo"], capture_output=True)


async def test_demo_account_gets_carta_as_itself(demo):
    password = (demo.workdir / "demo" / "carta-demo.password").read_text()
    assert "STAND-IN" in demo.log() and password in demo.log()
    session = demo.login("carta-demo", password)
    demo.start_server("carta-demo")
    assert "<title>CARTA</title>" in open_carta(demo, session, "carta-demo").text
    async with connect(demo, session, "carta-demo") as ws:
        assert (await register(ws))[3].success
        listing = (await file_list(ws))[3]
    assert listing.success
    uid = pwd.getpwnam("carta-demo").pw_uid
    mine = wait_for(lambda: [s for s in backend_sockets() if os.stat(f"/proc/{s[2]}").st_uid == uid],
                    10, "carta-demo's backend")
    assert {address for address, _, _ in mine} == {"127.0.0.1"}


def test_demo_refuses_a_wrong_password(demo):
    with pytest.raises(PermissionError):
        demo.login("carta-demo", "wrong")
