"""The Hub's ``c.CartaBackend`` settings reach the user's server in its environment
($CARTA_HUB_SERVER_CONFIG), not on its command line: a list setting arrives as a list without
traitlets' DeprecationWarning for list values on the command line, ``ps`` shows no settings,
and the folder templates are filled with the user's fields. Real Hub + CHP, both server modes;
a server started by hand still takes ``--CartaBackend.x=`` options."""

import os
import subprocess
from pathlib import Path

import pytest
from helpers.hub import SAME_USER_CARTA, VENV_BIN
from helpers.ports import wait_for

from carta_hub.backend import SERVER_CONFIG_ENV

SETTINGS = """
c.SameUserCartaSpawner.carta_mode = "{mode}"
c.SameUserCartaSpawner.environment = {{"PYTHONWARNINGS": "default::DeprecationWarning"}}
c.CartaBackend.extra_args = ["--enable_scripting"]
c.CartaBackend.top_level_folder = "{{workdir}}/homes/{{username}}"
"""


def argv_of(program, name):
    """The command lines of ``program`` processes serving Hub user ``name``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"JUPYTERHUB_USER={name}".encode() in environ and any(
            a.endswith(f"/{program}".encode()) for a in argv[:2]
        ):
            found.append([a.decode() for a in argv])
    return found


@pytest.fixture(scope="module", params=["carta", "lab"])
def session(request, hub_factory, hub_unix_user):
    """A running server in each mode (user cfg.<mode>), its backend started."""
    mode = request.param
    hub, name = hub_factory(SAME_USER_CARTA + SETTINGS.format(mode=mode)), f"cfg.{mode}"
    home = hub.workdir / "homes" / name
    home.mkdir(parents=True)
    subprocess.run(["chown", hub_unix_user.pw_name, str(home)], check=True)
    hub.start_server(name)
    page = "carta/" if mode == "lab" else ""  # the tile starts CARTA on first use
    assert hub.login(name).get(hub.user_url(name, page)).status_code == 200
    return hub, name, home


def test_backend_gets_the_hubs_settings(session):
    _, name, home = session
    (backend,) = wait_for(lambda: argv_of("carta-standin", name), 30, "the backend")
    assert "--enable_scripting" in backend  # a list, not the string '["--enable_scripting"]'
    assert backend[backend.index("--top_level_folder") + 1] == str(home)


def test_servers_command_line_holds_no_settings(session):
    _, name, _ = session
    program = "carta-hub-singleuser" if name == "cfg.carta" else "jupyterhub-singleuser"
    (server,) = argv_of(program, name)
    assert not [a for a in server if "Carta" in a], server


def test_no_deprecation_warning_for_the_settings(session):
    hub, _, _ = session
    warned = [
        line for line in hub.log().splitlines() if "DeprecationWarning" in line and "Carta" in line
    ]
    assert not warned


def test_server_started_by_hand_takes_command_line_settings(tmp_path):
    """The traitlets command line stays, and wins over the environment's settings."""
    code = (
        "from carta_hub.server.app import CartaSingleUserApp\n"
        "from carta_hub.backend import CartaBackend\n"
        "app = CartaSingleUserApp()\n"
        "app.initialize(['--CartaBackend.verbosity=2', '--CartaBackend.extra_args=-x'])\n"
        "b = CartaBackend(parent=app)\n"
        "print(b.verbosity, b.extra_args, b.idle_timeout)\n"
    )
    env = {
        **os.environ,
        SERVER_CONFIG_ENV: '{"config": {"CartaBackend": {"verbosity": 5, "idle_timeout": 60}}}',
    }
    result = subprocess.run(
        [str(VENV_BIN / "python"), "-W", "error::DeprecationWarning", "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.split("\n")[0] == "2 ['-x'] 60"
