"""``carta-hub-singleuser``: a CARTA-only server a spawner runs instead of
``jupyterhub-singleuser``. CARTA is served at the server's root, behind the Hub's OAuth
(the owner and whoever the Hub grants access), on jupyter-server-proxy's standalone handler.
"""

import asyncio
import logging
import os
import re
import signal
from urllib.parse import urlparse

from jupyter_server_proxy.standalone.proxy import make_standalone_proxy
from jupyterhub.services.auth import HubOAuthCallbackHandler
from jupyterhub.utils import url_path_join
from tornado import httpserver, netutil, web
from traitlets import Bool, Int, Unicode, default, validate
from traitlets.config import Application, catch_config_error

from carta_hub import __version__
from carta_hub.backend import BackendNotFound, CartaBackend, server_config
from carta_hub.server import autosave, hubapi
from carta_hub.server.activity import SETTING, ActivityReporter, LastUse
from carta_hub.server.backend_process import BackendFailed, BackendProcess
from carta_hub.server.proxy import CartaProxyHandler
from carta_hub.server.routes import route_handlers

_Standalone, _ = make_standalone_proxy(CartaProxyHandler, {})


class CartaOnlyHandler(_Standalone):
    """The standalone proxy's Hub OAuth in front of our CARTA handler."""

    write_error = CartaProxyHandler.write_error

    @property
    def token_authenticated(self) -> bool:
        """The Hub OAuth took a token (``Authorization: token|Bearer``), not the cookie."""
        # imported here: the module loads the Hub's database model, which this server
        # defers (carta_hub.server.main); only a scripting request needs the answer
        from jupyterhub.singleuser.mixins import JupyterHubLoginHandlerMixin

        return JupyterHubLoginHandlerMixin.is_token_authenticated(self)

    def check_scripting_xsrf(self) -> None:
        """JupyterHub's XSRF rule for cookie-authenticated requests (which the standalone
        proxy switches off for everything it proxies)."""
        self.hub_auth.check_xsrf_cookie(self)


def _service_url():
    return urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", ""))


class CartaSingleUserApp(Application):
    name = "carta-hub-singleuser"
    description = "Serve one user's CARTA at the root of their JupyterHub server."
    version = __version__
    classes = [CartaBackend]
    aliases = {
        "ip": "CartaSingleUserApp.ip",
        "port": "CartaSingleUserApp.port",
        "base-url": "CartaSingleUserApp.base_url",
    }

    ip = Unicode(help="Address to listen on. Default: from $JUPYTERHUB_SERVICE_URL.").tag(
        config=True
    )
    port = Int(help="Port to listen on. Default: from $JUPYTERHUB_SERVICE_URL.").tag(config=True)
    base_url = Unicode(help="URL prefix of this server. Default: $JUPYTERHUB_SERVICE_PREFIX.").tag(
        config=True
    )
    activity_interval = Int(
        60,
        help="""Seconds between activity reports to the Hub. A report is sent only when the
        student used CARTA since the last one (PINGs of an open tab do not count).""",
    ).tag(config=True)

    report_port = Bool(
        False,
        help="""Listen on a port the system picks and tell the Hub (POST
        $JUPYTERHUB_API_URL/batchspawner), for spawners that cannot know it in advance:
        CARTASlurmSpawner sets it instead of running batchspawner-singleuser.""",
    ).tag(config=True)

    @default("log_level")
    def _log_level(self):
        return logging.INFO

    @default("ip")
    def _ip(self):
        url = _service_url()
        return url.hostname or ("" if url.netloc else "127.0.0.1")

    @default("port")
    def _port(self):
        return _service_url().port or 8888

    @default("base_url")
    def _base_url(self):
        return os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/")

    @validate("base_url")
    def _slashes(self, proposal):
        return "/" + proposal.value.strip("/") + "/" if proposal.value.strip("/") else "/"

    @catch_config_error
    def initialize(self, argv=None):
        """The command line, over the settings the spawner passed in the environment
        ($CARTA_HUB_SERVER_CONFIG)."""
        super().initialize(argv)
        config = server_config(os.environ)
        config.merge(self.cli_config)
        self.update_config(config)

    def make_app(self, backend):
        prefix = re.escape(self.base_url)
        last_use = LastUse()
        self.reporter = ActivityReporter(last_use, self.activity_interval, self.log)
        state = self.state = {"backend": backend}
        handlers = [
            (f"^{prefix[:-1]}$", web.RedirectHandler, {"url": self.base_url}),
            (f"^{prefix}oauth_callback", HubOAuthCallbackHandler),
            *route_handlers(self.base_url, state, lab=False),
            (f"^{prefix}(.*)", CartaOnlyHandler, {"state": state}),
        ]
        return web.Application(
            handlers,
            base_url=self.base_url,
            hub_user=os.environ.get("JUPYTERHUB_USER", ""),
            cookie_secret=os.urandom(32),
            **{SETTING: last_use},
            log_function=self._log_request,
        )

    def _log_request(self, handler):
        status = handler.get_status()
        if status >= 400 or self.log_level <= 10:
            self.log.info("%d %s %s", status, handler.request.method, handler.request.path)

    def session_ended(self, code):
        if code == 0:
            self.log.info("CARTA exited (exit or initial timeout): stopping this server")
            self.stopped.set()

    async def prestart(self):
        """Start CARTA before listening, so that the Hub sees this server ready only when
        CARTA is. True: serve; False: stop (CARTA failed; its log tail is logged)."""
        try:
            await self.backend.ensure_running()
        except BackendNotFound as e:
            self.log.error("%s", e)  # served as a page naming the setting to change
        except BackendFailed as e:
            self.log.error("%s", e)
            self.log.error("CARTA could not start: stopping this server")
            return False
        return True

    async def serve(self):
        try:
            ssl_context = hubapi.server_ssl_context()
        except hubapi.SSLConfigError as e:
            self.log.error("%s", e)
            return 1
        self.stopped = asyncio.Event()
        self.backend = BackendProcess(CartaBackend(parent=self), self.log, self.session_ended)
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, self.stopped.set)
        starting = asyncio.ensure_future(self.prestart())
        stopping = asyncio.ensure_future(self.stopped.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done() or not starting.result():
            starting.cancel()
            stopping.cancel()
            await self.backend.stop()
            return 0 if self.stopped.is_set() else 1
        server, port = self._listen(ssl_context)
        code = 0
        if self.report_port and not await self._report(port):
            code = 1
            self.stopped.set()
        self.reporter.start()
        autosave.start(self.state, self.reporter.last_use, self.log)
        await stopping
        server.stop()
        await self.backend.stop()
        return code

    def _listen(self, ssl_context):
        """Serve on the configured (or, to report, a free) port; with JupyterHub's
        internal_ssl only TLS with a client certificate of the internal CA is accepted."""
        app = self.make_app(self.backend)
        server = httpserver.HTTPServer(app, xheaders=True, ssl_options=ssl_context)
        sockets = netutil.bind_sockets(0 if self.report_port else self.port, self.ip or None)
        server.add_sockets(sockets)
        port = sockets[0].getsockname()[1]
        self.log.info(
            "CARTA for %s at %s://%s:%d%s",
            os.environ.get("JUPYTERHUB_USER", "?"),
            "https" if ssl_context else "http",
            self.ip or "*",
            port,
            self.base_url,
        )
        return server, port

    async def _report(self, port):
        url = url_path_join(os.environ.get("JUPYTERHUB_API_URL", ""), "batchspawner")
        try:
            await hubapi.post(url, {"port": port})
        except Exception as e:
            self.log.error(
                "Could not tell the Hub this server's port (POST %s): %s. Is the "
                "Hub's API reachable from this node (c.JupyterHub.hub_bind_url)?",
                url,
                e,
            )
            return False
        return True

    def start(self):
        code = asyncio.run(self.serve())
        if code:
            self.exit(code)


def main(argv=None):
    CartaSingleUserApp.launch_instance(argv)


if __name__ == "__main__":
    main()
