"""The ``carta`` jupyter-server-proxy entry point: the JupyterLab launcher tile only.

The tile opens :data:`TILE_PATH`, which the :mod:`carta_hub.server.jupyterlab` server
extension serves. The entry defines no process: jupyter-server-proxy's own handler would
reach the backend at ``localhost``, which resolves to ``::1`` first on most systems, where
any local user may listen and receive the backend's token.
"""

import os
import warnings

ICON = os.path.join(os.path.dirname(__file__), "carta.svg")
EXTENSION = "carta_hub.server.jupyterlab"
#: Where the tile points, under the server's base URL: the extension's handler.
TILE_PATH = "carta/"

# An entry without command or port is what we mean (a tile, no route): not worth a warning.
warnings.filterwarnings("ignore", "Server proxy carta does not have a command", UserWarning)


def _warn_if_extension_disabled():
    from jupyter_server.serverapp import ServerApp

    if ServerApp.initialized() and not ServerApp.instance().jpserver_extensions.get(EXTENSION):
        ServerApp.instance().log.warning(
            "carta-hub: the CARTA tile needs the %s server extension, which is disabled; "
            "enable it with: jupyter server extension enable %s",
            EXTENSION,
            EXTENSION,
        )


def setup_carta() -> dict:
    _warn_if_extension_disabled()
    return {
        "new_browser_tab": True,
        "launcher_entry": {"title": "CARTA", "icon_path": ICON, "path_info": TILE_PATH},
    }
