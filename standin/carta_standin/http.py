"""carta_backend's HTTP side on the websocket's port: /config, the frontend's static files,
the /api/database routes and /api/scripting/action, all under the URL prefix P.

A websocket upgrade is accepted on any path (routed before everything else).

Request heads over 4 KiB or with more than 48 header fields are refused with uWebSockets'
431 (see :class:`HeadLimit`).
"""

import json
import mimetypes
import os
import re
from dataclasses import dataclass
from urllib.parse import unquote

from tornado import httputil
from tornado.routing import Matcher, Rule
from tornado.web import Application, RequestHandler

from carta_standin import log
from carta_standin.auth import authorised
from carta_standin.database import ConfigStore
from carta_standin.lifecycle import Lifecycle
from carta_standin.session import SessionHandler

MAX_MESSAGE_SIZE = 256 * 2**20
# carta_backend's uWebSockets (v20.46.0, third-party/install/uWebSockets.cmake) keeps at most
# 4 KiB of a request head it has not seen whole (src/HttpParser.h: MAX_FALLBACK_SIZE in
# consumePostPadded) and parses at most 48 header fields (HttpRequest::MAX_HEADERS = 50 in
# getHeaders); beyond either it writes this and closes (src/HttpContext.h, HttpErrors.h).
MAX_HEAD = 4096
MAX_FIELDS = 48
TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n<h1>Request Header Fields "
    b"Too Large</h1><hr><i>uWebSockets/20 Server</i>"
)
mimetypes.add_type("application/wasm", ".wasm")


@dataclass
class Context:
    """What the HTTP handlers and the sessions of one stand-in share."""

    top_level_folder: str
    starting_folder: str
    token: str  # "" accepts everyone (--debug_no_auth)
    url_prefix: str  # "" or "/a/b"
    frontend_folder: str | None  # None: --no_frontend
    database: bool
    runtime_config: bool
    enable_scripting: bool
    read_only: bool
    idle_timeout: int
    store: ConfigStore
    lifecycle: Lifecycle
    platform_strings: dict


class UpgradeMatcher(Matcher):
    """Matches websocket upgrade requests, whatever their path."""

    def match(self, request):
        return {} if request.headers.get("Upgrade", "").lower() == "websocket" else None


class BaseHandler(RequestHandler):
    def initialize(self, ctx):
        self.ctx = ctx

    def reply(self, status, body=None):
        self.set_status(status)
        if body is not None:
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps(body))


class NotImplementedHandler(BaseHandler):
    def get(self, *_):
        self.reply(501)

    put = delete = post = get


class ApiHandler(BaseHandler):
    """Token-checked, uncached, CORS-enabled /api route."""

    def prepare(self):
        for name, value in (
            ("Cache-Control", "private, no-cache, no-store, must-revalidate"),
            ("Expires", "-1"),
            ("Pragma", "no-cache"),
        ):
            self.set_header(name, value)
        self.set_cors_headers()
        if self.request.method != "OPTIONS" and not authorised(self.request, self.ctx.token):
            self.reply(403)
            self.finish()

    def set_cors_headers(self):
        self.set_header("Access-Control-Allow-Origin", "*")
        self.set_header("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
        self.set_header(
            "Access-Control-Allow-Headers", "origin, content-type, accept, x-requested-with"
        )
        self.set_header("Access-Control-Max-Age", "3600")

    def options(self, *_):
        self.reply(200)


class PreferencesHandler(ApiHandler):
    def get(self):
        self.reply(*self.ctx.store.get_preferences())

    def put(self):
        self.reply(*self.ctx.store.set_preferences(self.request.body))

    def delete(self):
        self.reply(*self.ctx.store.clear_preferences(self.request.body))


class ObjectListHandler(ApiHandler):
    def get(self, kind):
        self.reply(*self.ctx.store.list_objects(kind))


class ObjectsHandler(ApiHandler):
    def get(self, kind):
        self.reply(*self.ctx.store.get_objects(kind))


class ObjectHandler(ApiHandler):
    """GET <kind>/<name>; PUT and DELETE <kind> with the name in the JSON body."""

    def get(self, kind, name=None):
        self.reply(*(self.ctx.store.get_object(kind, name) if name else (404,)))

    def put(self, kind, name=None):
        self.reply(*(self.ctx.store.set_object(kind, self.request.body) if not name else (404,)))

    def delete(self, kind, name=None):
        self.reply(*(self.ctx.store.clear_object(kind, self.request.body) if not name else (404,)))


class ScriptingHandler(ApiHandler):
    def post(self):
        log.warning("carta-standin cannot run scripting actions (no images to act on)")
        self.reply(501)


class ConfigHandler(BaseHandler):
    def get(self):
        if self.ctx.runtime_config:
            self.reply(200, {"apiAddress": f"{self.ctx.url_prefix}/api"})
        else:
            self.reply(200)


class StaticHandler(BaseHandler):
    """The frontend's files; ``file.gz`` instead of ``file`` when the client accepts gzip."""

    def get(self):
        root = self.ctx.frontend_folder
        if root is None:
            return self.reply(501)
        relative = unquote(self.request.path)[len(self.ctx.url_prefix) :].strip("/")
        path = os.path.normpath(os.path.join(root, relative or "index.html"))
        if not path.startswith(root.rstrip("/") + "/"):
            return self.reply(403)
        content_type = mimetypes.guess_type(path)[0]
        if "gzip" in self.request.headers.get("Accept-Encoding", "") and os.path.isfile(
            path + ".gz"
        ):
            path += ".gz"
            self.set_header("Content-Encoding", "gzip")
        if not os.path.isfile(path):
            return self.reply(404)
        with open(path, "rb") as f:
            body = f.read()
        if content_type:
            self.set_header("Content-Type", content_type)
        self.finish(body)


def frontend_found(folder):
    """carta_backend's test for a usable frontend folder: a readable index.html."""
    return os.access(os.path.join(folder, "index.html"), os.R_OK)


class HeadLimit(httputil.HTTPMessageDelegate):
    """Refuses a request whose head is over :data:`MAX_HEAD` bytes or :data:`MAX_FIELDS`
    fields, as uWebSockets does. uWebSockets parses a larger head that arrives in one read
    (often so on an idle loopback, rarely otherwise); the stand-in refuses it always."""

    def __init__(self, delegate, connection):
        self.delegate, self.connection = delegate, connection
        self.refused = False

    def headers_received(self, start_line, headers):
        fields = list(headers.get_all())
        size = len(" ".join(start_line)) + 2 + sum(len(k) + len(v) + 4 for k, v in fields) + 2
        if size <= MAX_HEAD and len(fields) <= MAX_FIELDS:
            return self.delegate.headers_received(start_line, headers)
        log.debug(f"Refused a request head of {size} bytes and {len(fields)} fields")
        self.refused = True
        stream = self.connection.detach()
        stream.write(TOO_LARGE).add_done_callback(lambda _: stream.close())
        return None

    def data_received(self, chunk):
        return None if self.refused else self.delegate.data_received(chunk)

    def finish(self):
        if not self.refused:
            self.delegate.finish()

    def on_connection_close(self):
        if not self.refused:
            self.delegate.on_connection_close()


class BackendApplication(Application):
    def start_request(self, server_conn, request_conn):
        return HeadLimit(super().start_request(server_conn, request_conn), request_conn)


def make_app(ctx):
    """The tornado Application serving ``ctx``."""
    p = re.escape(ctx.url_prefix)
    kw = {"ctx": ctx}
    kinds = "(layout|snippet|workspace)"
    rules = [Rule(UpgradeMatcher(), SessionHandler, kw)]
    if ctx.database:
        rules += [
            (rf"{p}/api/database/preferences", PreferencesHandler, kw),
            (rf"{p}/api/database/list/{kinds}s", ObjectListHandler, kw),
            (rf"{p}/api/database/{kinds}s", ObjectsHandler, kw),
            (rf"{p}/api/database/{kinds}(?:/([^/]+))?", ObjectHandler, kw),
        ]
    else:
        rules.append((rf"{p}/api/database/.*", NotImplementedHandler, kw))
    rules.append(
        (
            rf"{p}/api/scripting/action",
            ScriptingHandler if ctx.enable_scripting else NotImplementedHandler,
            kw,
        )
    )
    if ctx.frontend_folder is not None:
        rules.append((rf"{p}/config", ConfigHandler, kw))
    rules.append((rf"{p}(?:/.*)?", StaticHandler, kw))
    return BackendApplication(
        rules, websocket_max_message_size=MAX_MESSAGE_SIZE, log_function=_log_request
    )


def _log_request(handler):
    request = handler.request
    log.debug(f"{handler.get_status()} {request.method} {request.uri} ({request.remote_ip})")
