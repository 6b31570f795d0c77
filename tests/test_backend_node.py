"""The backend on a real node, started by the wrapper (carta_hub.process.BackendProcess) with
the stand-in ``carta-standin`` (NOT CARTA): the node's /etc/carta/backend.json, the CPUs the
session was given, a home where ~/.carta cannot be written."""

import json
import logging

import pytest
import requests
from helpers.standin import FRONTEND, STANDIN

from carta_hub.backend import CartaBackend
from carta_hub.process import BackendProcess

# carta-standin with its own view of /etc: an overlay holding carta/backend.json, in a mount
# namespace of its own (an unprivileged user namespace: no root needed, the host's /etc stays)
WITH_SITE_ETC = """#!/bin/sh
exec unshare --user --map-current-user --keep-caps --mount -- sh -c \\
    'mount -t overlay overlay -o "lowerdir=/etc,upperdir=$0/upper,workdir=$0/work" /etc &&
     exec "$@"' {folder} {standin} "$@"
"""


@pytest.fixture
def home(tmp_path, monkeypatch):
    folder = tmp_path / "home"
    (folder / "observations").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(folder))
    return folder


def wrapper(**settings):
    settings = {"executable": STANDIN, "frontend_folder": FRONTEND, "start_timeout": 30,
                **settings}
    return BackendProcess(CartaBackend(**settings), logging.getLogger("test-backend-node"))


def get(port, token, path):
    return requests.get(f"http://127.0.0.1:{port}{path}", headers={"carta-auth-token": token},
                        timeout=5)


def site_etc(folder, settings):
    """An executable that runs carta-standin where /etc/carta/backend.json holds ``settings``."""
    (folder / "upper" / "carta").mkdir(parents=True)
    (folder / "work").mkdir()
    (folder / "upper" / "carta" / "backend.json").write_text(json.dumps(settings))
    script = folder / "carta-standin-site"
    script.write_text(WITH_SITE_ETC.format(folder=folder, standin=STANDIN))
    script.chmod(0o755)
    return script


async def test_node_system_config_is_ignored(tmp_path, home):
    """A node's /etc/carta/backend.json (CARTA installed by the site for its own use) must not
    move CARTA under another URL prefix, switch its frontend off, or change the folder the
    student starts in."""
    elsewhere = home / "elsewhere"
    elsewhere.mkdir()
    executable = site_etc(tmp_path / "site", {
        "http_url_prefix": "site", "no_frontend": True, "starting_folder": str(elsewhere)})
    backend = wrapper(executable=str(executable), top_level_folder="{home}",
                      starting_folder="{home}/observations")
    try:
        port, token = await backend.ensure_running()
        page = get(port, token, "/")
        assert page.status_code == 200 and "<title>CARTA</title>" in page.text
        assert get(port, token, "/config").json()["apiAddress"] == "/api"
        listening = next(line for line in backend.tail if "Listening on port" in line)
        assert f"starting folder {home / 'observations'}." in listening, listening
    finally:
        await backend.stop()
