"""Jupyter Server extension: serves the URL the CARTA tile opens (the ``path_info`` of
:mod:`carta_hub.server.launcher`'s entry) with the carta-hub handler (byte-level
websockets, no frame size cap). jupyter-server-proxy serves nothing there (the entry has no
command or port), so the order the extensions load in does not matter."""

import os

from jupyter_server.utils import url_path_join

from carta_hub.backend import CartaBackend, server_config
from carta_hub.server import autosave
from carta_hub.server.activity import SETTING, LastUse, publish
from carta_hub.server.backend_process import BackendProcess
from carta_hub.server.launcher import TILE_PATH
from carta_hub.server.proxy import CartaProxyHandler
from carta_hub.server.routes import route_handlers

#: The web application setting holding carta-hub's routes' state
STATE = "carta_hub_state"


def _load_jupyter_server_extension(serverapp):
    config = server_config(os.environ)  # what the spawner passed; the server's own wins
    config.merge(serverapp.config)
    backend = BackendProcess(CartaBackend(parent=serverapp, config=config), serverapp.log)
    serverapp.web_app.settings[SETTING] = LastUse()
    pattern = url_path_join(serverapp.base_url, TILE_PATH, "(.*)")
    state = serverapp.web_app.settings[STATE] = {"backend": backend}
    serverapp.web_app.add_handlers(
        ".*",
        [
            *route_handlers(serverapp.base_url, state, lab=True),
            (pattern, CartaProxyHandler, {"state": state}),
        ],
    )
    serverapp.log.info("carta-hub: CARTA at %s", url_path_join(serverapp.base_url, TILE_PATH))


async def _start_jupyter_server_extension(serverapp):
    """With the event loop running: CARTA's use becomes the Jupyter Server's activity, and
    the open tab is saved before the session ends (:mod:`carta_hub.server.autosave`)."""
    settings = serverapp.web_app.settings
    publish(settings)
    autosave.start(settings[STATE], settings[SETTING], serverapp.log)
