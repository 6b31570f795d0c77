"""The proxy handler in front of one user's backend, shared by the JupyterLab tile and the
CARTA-only server. Built on jupyter-server-proxy's handlers: HTTP goes through its proxy,
websockets through :mod:`carta_hub.server.tunnel`."""

import json
import re
from urllib.parse import urlsplit

from jupyter_server.base.handlers import JupyterHandler
from jupyter_server_proxy.handlers import SuperviseAndProxyHandler
from tornado import web
from tornado.escape import xhtml_escape
from tornado.httputil import HTTPHeaders, responses

from carta_hub.backend import LOOPBACK, BackendNotFound
from carta_hub.server import scripting
from carta_hub.server.activity import SETTING, count_request
from carta_hub.server.backend_process import BackendFailed, BackendProcess
from carta_hub.server.clock import add_script, script_url
from carta_hub.server.tunnel import request_target, tunnel


def rewrite_config(response, request, path: str) -> None:
    """Point the frontend's ``apiAddress`` at this server's own prefix.

    The backend runs without ``--http_url_prefix`` (it rejects `.` and `%` in usernames), so
    ``/config`` is answered with the prefix the browser actually used.
    """
    if path != "/config" or response.code != 200:
        return
    try:
        config = json.loads(response.body)
    except ValueError:
        return
    if isinstance(config, dict) and "apiAddress" in config:
        prefix = request.path[: -len("config")]
        config["apiAddress"] = prefix + "api"
        response.body = json.dumps(config).encode()


def fill_preferences(response, request, path: str, defaults: dict) -> None:
    """Fill the operator's default preferences into keys the user has not saved."""
    if path != "/api/database/preferences" or request.method != "GET" or response.code != 200:
        return
    body = json.loads(response.body)
    stored = body.get("preferences")
    if isinstance(stored, dict):
        for key, value in defaults.items():
            stored.setdefault(key, value)
        response.body = json.dumps(body).encode()


#: carta_backend's layout, snippet and workspace routes (src/HttpServer/HttpServer.cc,
#: RegisterRoutes): GET ``<kind>/<name>``; PUT and DELETE ``<kind>`` with the name in the
#: JSON body's ``<kind>Name`` (SetObjectFromString, ClearObjectFromString).
OBJECT_ROUTE = re.compile(r"/*api/database/+(layout|snippet|workspace)(?:/(.*))?")
#: A name that stays a file name inside its folder: not "." or "..", no "/", "\\", NUL or
#: other control character.
OBJECT_NAME = re.compile(r"(?!\.\.?\Z)[^/\\\x00-\x1f\x7f]+")
BAD_NAME = (
    "Layout, snippet and workspace names may not hold '/', '\\' or control characters, "
    "nor be '.' or '..': choose another name."
)


class _Pairs(list):
    """A JSON object as its (key, value) pairs: duplicate keys stay visible."""


def _names_in_body(body, field):
    """The values of ``field`` in a JSON object body; None if the body is no JSON object."""
    try:
        data = json.loads(body.decode("utf-8"), object_pairs_hook=_Pairs)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    return [v for k, v in data if k == field] if isinstance(data, _Pairs) else None


def check_object_names(method: str, path: str, body: bytes) -> None:
    """Refuse (400) a layout, snippet or workspace name that is not a plain file name.

    carta_backend reads, writes and deletes ``~/.carta/config/<kind>s/<name>.json`` with the
    name as given (HttpServer.cc: GetExistingObject, WriteObjectFile, ClearObjectFromString;
    a NUL even ends the path): whoever may use the owner's CARTA could otherwise reach any
    file the owner can write.
    """
    route = OBJECT_ROUTE.fullmatch(path)
    if not route:
        return
    kind, name = route.groups()
    if name is not None:
        names = [name]
    elif method in ("PUT", "DELETE"):
        names = _names_in_body(body, kind + "Name")
        if names is None:
            raise web.HTTPError(400, f"The request body must be a JSON object with {kind}Name.")
    else:
        return
    if not all(isinstance(n, str) and OBJECT_NAME.fullmatch(n) for n in names):
        raise web.HTTPError(400, BAD_NAME)


#: For ``CartaBackend.offline``: the page may connect to its own server only (``'self'``
#: covers the same-origin websocket; ``data:``/``blob:`` are the frontend's in-page modules).
OFFLINE_POLICY = "connect-src 'self' data: blob:"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
#: Request headers carta_backend uses on HTTP (src/HttpServer/HttpServer.cc,
#: HandleStaticRequest: accept-encoding; the token is added as carta-auth-token).
HTTP_FORWARDED = {"accept-encoding", "content-type", "carta-auth-token"}


def restrict_connections(response) -> None:
    """Keep the frontend (and its workers) from contacting any host but this server."""
    response.headers["Content-Security-Policy"] = OFFLINE_POLICY


class CartaProxyHandler(SuperviseAndProxyHandler):
    """Proxies ``<prefix>/...`` to the backend, starting it on demand.

    ``state["backend"]`` is the server's :class:`~carta_hub.server.backend_process.BackendProcess`,
    the application setting ``carta_last_use`` its :class:`~carta_hub.server.activity.LastUse`.
    """

    name = "carta"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, update_last_activity=count_request, **kwargs)
        defaults = self.backend.backend.preference_defaults
        self._clock_script = xhtml_escape(script_url(self.settings["base_url"]))
        self.rewrite_response = [
            rewrite_config,
            lambda response, request, path: fill_preferences(response, request, path, defaults),
            lambda response, path: self.backend.page_notice(response, path),
            lambda response, path: add_script(response, path, self._clock_script),
        ]
        if self.backend.backend.offline:
            self.rewrite_response.append(restrict_connections)

    @property
    def backend(self) -> BackendProcess:
        return self.state["backend"]

    @property
    def port(self) -> int | None:
        return self.backend.port

    async def ensure_process(self) -> None:
        try:
            await self.backend.ensure_running()
        except (BackendNotFound, BackendFailed) as e:
            raise web.HTTPError(503, str(e), reason="CARTA could not start") from e

    async def proxy(self, port: int, path: str) -> None:
        # jupyter-server-proxy switches XSRF checks off (check_xsrf_cookie): another site's
        # page could otherwise change the student's preferences or layouts with their cookies.
        # A script with a token is no page: as for the Jupyter Server's own API, it may post
        # from anywhere (its scripting requests only: the frontend sends no token).
        script = scripting.is_scripting(path)
        token = script and self.token_authenticated
        if self.request.method not in SAFE_METHODS and not token and (reason := self._cross_site()):
            raise web.HTTPError(
                403,
                f"{reason}: CARTA refuses changes sent by another "
                "site's page. Use CARTA from its own tab.",
            )
        if script:
            scripting.check_action(self, token)
        check_object_names(self.request.method, path, self.request.body)
        await self.ensure_process()
        return await super().proxy(self.port, path)

    def check_scripting_xsrf(self) -> None:
        """The Jupyter Server's XSRF rule (with JupyterHub's singleuser extension, JupyterHub's:
        it replaces JupyterHandler.check_xsrf_cookie), which jupyter-server-proxy's handler
        switches off for what it proxies."""
        JupyterHandler.check_xsrf_cookie(self)

    def get_client_uri(self, protocol: str, host: str, port: int, proxied_path: str) -> str:
        # jupyter-server-proxy passes "localhost", which resolves to ::1 first where
        # /etc/hosts says so: any local user listening on [::1]:port would get the token.
        return super().get_client_uri(protocol, LOOPBACK, port, proxied_path)

    def proxy_request_options(self) -> dict:
        # the frontend deletes layouts, snippets, workspaces and preferences with a DELETE
        # that has a JSON body, which tornado's client refuses unless told otherwise
        return {**super().proxy_request_options(), "allow_nonstandard_methods": True}

    def get_request_headers_override(self) -> dict:
        return {"carta-auth-token": self.backend.token}

    def proxy_request_headers(self) -> HTTPHeaders:
        # Only what carta_backend reads (the Hub's cookies and credentials, Referer and the
        # like would push the head over uWebSockets' 4 KiB: see tunnel.FORWARDED); tornado's
        # client sets Host and Content-Length itself.
        forwarded = HTTPHeaders()
        for name, value in super().proxy_request_headers().get_all():
            if name.lower() in HTTP_FORWARDED:
                forwarded.add(name, value)
        return forwarded

    async def get(self, path: str) -> None:
        if self.request.headers.get("Upgrade", "").lower() != "websocket":
            return await self.http_get(path)
        if not self.current_user:
            raise web.HTTPError(403, "Log in to the Hub first")
        if reason := self._cross_site():
            raise web.HTTPError(403, f"{reason}: cross-origin websocket refused")
        target = request_target("/" + path, self.request.query)
        if target is None:
            raise web.HTTPError(
                400,
                "The websocket URL holds a space, a control character or "
                "a non-ASCII character: open CARTA from its usual link",
            )
        await self.ensure_process()
        last_use = self.settings[SETTING]
        last_use.touch_message()
        # the relay threads only stamp the time: no tornado or jupyter-server-proxy code there
        await tunnel(self, self.backend.port, self.backend.token, target, last_use.touch_message)

    def _cross_site(self) -> str | None:
        """Why the request looks sent by another site's page (None: it does not).

        tornado 6.6's cross-origin rule (tornado/web.py, its cross_origin_protection),
        written with public hooks: ``Sec-Fetch-Site`` when the browser sends it, else
        ``Origin`` against ``Host``; an origin that ``check_origin`` trusts passes. Neither
        header: not a browser.
        """
        site = self.request.headers.get("Sec-Fetch-Site")
        origin = self.request.headers.get("Origin")
        if site in ("same-origin", "none") or (site is None and origin is None):
            return None
        host = self.request.headers.get("Host", "").lower()
        if site is None and urlsplit(origin).netloc.lower() == host:
            return None
        if origin and self.check_origin(origin):
            return None
        return f"Origin {origin or 'none'} (Sec-Fetch-Site {site or 'none'})"

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None))[1]
        # the reason tornado sends in the status line (RequestHandler.send_error)
        reason = (
            getattr(exc, "reason", None)
            or kwargs.get("reason")
            or responses.get(status_code, "Unknown")
        )
        message = getattr(exc, "log_message", None) or reason
        if scripting.SCRIPTING_URL.search(self.request.path):
            # for scripts: carta_backend's answer with carta-hub's message (the body of a
            # scripting error is empty otherwise: HttpServer.cc, HandleScriptingAction)
            self.set_header("Content-Type", "application/json")
            return self.finish(json.dumps({"success": False, "message": message}))
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(
            f"<!doctype html><title>{status_code} {xhtml_escape(reason)}</title>"
            f"<h1>{xhtml_escape(reason)}</h1><pre>{xhtml_escape(message)}</pre>"
        )
