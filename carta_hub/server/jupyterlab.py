"""Jupyter Server extension: serves the CARTA tile's ``/carta/`` with the carta-hub handler
(byte-level websockets, no frame size cap) ahead of jupyter-server-proxy's stock one."""

from jupyter_server.utils import url_path_join

from carta_hub.backend import CartaBackend
from carta_hub.server.proxy import CartaProxyHandler
from carta_hub.server.backend_process import BackendProcess


def _load_jupyter_server_extension(serverapp):
    backend = BackendProcess(CartaBackend(parent=serverapp), serverapp.log)
    pattern = url_path_join(serverapp.base_url, "carta", "(.*)")
    serverapp.web_app.add_handlers(
        ".*", [(pattern, CartaProxyHandler, {"state": {"backend": backend}})]
    )
    serverapp.log.info("carta-hub: CARTA at %s", url_path_join(serverapp.base_url, "carta/"))
