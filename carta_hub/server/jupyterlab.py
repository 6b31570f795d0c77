"""Jupyter Server extension: serves the CARTA tile's ``/carta/`` with the carta-hub handler
(byte-level websockets, no frame size cap) ahead of jupyter-server-proxy's stock one."""

import os

from jupyter_server.utils import url_path_join

from carta_hub.backend import CartaBackend, server_config
from carta_hub.server.proxy import CartaProxyHandler
from carta_hub.server.backend_process import BackendProcess


def _load_jupyter_server_extension(serverapp):
    config = server_config(os.environ)  # what the spawner passed; the server's own wins
    config.merge(serverapp.config)
    backend = BackendProcess(CartaBackend(parent=serverapp, config=config), serverapp.log)
    pattern = url_path_join(serverapp.base_url, "carta", "(.*)")
    serverapp.web_app.add_handlers(
        ".*", [(pattern, CartaProxyHandler, {"state": {"backend": backend}})]
    )
    serverapp.log.info("carta-hub: CARTA at %s", url_path_join(serverapp.base_url, "carta/"))
