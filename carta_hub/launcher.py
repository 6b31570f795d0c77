"""The ``carta`` jupyter-server-proxy entry point: the JupyterLab launcher tile.

Requests to ``/carta/`` are served by the :mod:`carta_hub.lab` server extension (it loads
before jupyter-server-proxy). The process definition below is jupyter-server-proxy's stock
fallback for a server where that extension is disabled.
"""

import os

from traitlets.config import Config

from .backend import CartaBackend
from .handlers import rewrite_config

ICON = os.path.join(os.path.dirname(__file__), "static", "carta.svg")


def _server_config():
    from jupyter_server.serverapp import ServerApp

    return ServerApp.instance().config if ServerApp.initialized() else Config()


def setup_carta():
    backend = CartaBackend(config=_server_config())
    token = backend.new_token()
    return {
        "command": lambda port: backend.command(port),
        "environment": backend.environment(token),
        "request_headers_override": {"carta-auth-token": token},
        "rewrite_response": rewrite_config,
        "timeout": backend.start_timeout,
        "new_browser_tab": True,
        "launcher_entry": {"title": "CARTA", "icon_path": ICON},
    }
