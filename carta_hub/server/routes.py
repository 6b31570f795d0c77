"""carta-hub's own routes on the user's server, under ``<prefix>carta-hub/``, in both modes:
the CARTA-only app (the Hub's OAuth, as CARTA's page) and JupyterLab (the Jupyter Server's
authentication and XSRF rules). A route is a small :class:`Route` subclass with ``path``
(a regex after ``carta-hub/``) and ``get``/``post`` methods; :func:`route_handlers` gives it
each mode's authentication. Every route answers only the server's owner.
"""

import json
import os
from typing import TYPE_CHECKING

from jupyter_server.base.handlers import JupyterHandler
from jupyterhub.services.auth import HubOAuthenticated
from jupyterhub.utils import url_path_join
from tornado import web

from carta_hub.server.launcher import TILE_PATH

if TYPE_CHECKING:
    from carta_hub.server.backend_process import BackendProcess

ROUTE_PREFIX = "carta-hub/"


def owner() -> str:
    """The Hub user this server belongs to."""
    return os.environ.get("JUPYTERHUB_USER", "")


class Route:
    """What every route has: the server's state, owner-only access, JSON answers."""

    path = ""

    def initialize(self, state: dict) -> None:
        self.state = state

    @property
    def backend(self) -> "BackendProcess":
        """The server's :class:`~carta_hub.server.backend_process.BackendProcess`."""
        return self.state["backend"]

    async def prepare(self) -> None:
        result = super().prepare()  # the Jupyter Server's is a coroutine, tornado's is not
        if result is not None:
            await result
        if self.user_name() is None:
            raise web.HTTPError(403, "Log in to the Hub first")
        if self.user_name() != owner():
            raise web.HTTPError(403, "Only the owner of this server can use this")

    def write_json(self, model: dict, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(model))


class _CartaOnly(HubOAuthenticated, web.RequestHandler):
    def user_name(self) -> str | None:
        user = self.current_user
        return user["name"] if user else None

    def carta_url(self) -> str:
        """CARTA's page: the server's root."""
        return self.settings["base_url"]

    def root_dir(self) -> str:
        """What a Jupyter Server would take as its root: the folder the spawner started this
        server in (the home, or the spawner's notebook_dir)."""
        return os.getcwd()


class _Lab(JupyterHandler):
    def user_name(self) -> str | None:
        user = self.current_user
        return user.username if user else None

    def carta_url(self) -> str:
        """CARTA's page: the tile's URL, which carta_hub.server.jupyterlab serves."""
        return url_path_join(self.base_url, TILE_PATH)

    def root_dir(self) -> str:
        """The Jupyter Server's root (JupyterLab's file browser paths start there)."""
        return self.settings["server_root_dir"]


def routes() -> list[type[Route]]:
    """Every route (imported here: the route modules import this one)."""
    from carta_hub.server.clock import BannerScript, ExtendRoute, SessionRoute
    from carta_hub.server.links import Link
    from carta_hub.server.scripting import Sessions

    return [Link, SessionRoute, ExtendRoute, BannerScript, Sessions]


def route_handlers(base_url: str, state: dict, lab: bool) -> list[tuple]:
    """Tornado handlers for every route of :func:`routes`, under ``base_url``."""
    base = _Lab if lab else _CartaOnly
    return [
        (
            url_path_join(base_url, ROUTE_PREFIX, route.path) + "$",
            type(route.__name__, (route, base), {}),
            {"state": state},
        )
        for route in routes()
    ]
