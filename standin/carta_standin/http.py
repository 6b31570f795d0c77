"""carta_backend's HTTP side on the websocket's port: /config, the frontend's static files,
the /api/database routes and /api/scripting/action, all under the URL prefix P.

A websocket upgrade is accepted on any path (routed before everything else).

Request heads over 4 KiB or with more than 48 header fields are refused with uWebSockets'
431 (see :class:`HeadLimit`).
"""

import asyncio
import itertools
import json
import mimetypes
import os
import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from tornado import httputil
from tornado.routing import Matcher, Rule
from tornado.web import Application, RequestHandler

from carta_standin import icd, log
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
    sessions: dict = field(default_factory=dict)  # SessionManager's _sessions: key -> session


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


class BadScriptingRequest(ValueError):
    """What nlohmann::json throws for a body SendScriptingRequest cannot read (400)."""


def _no_constant(name):
    raise BadScriptingRequest(f"syntax error: {name} is no JSON")


def _field(data, name, kinds):
    """``data[name]`` read with nlohmann's ``get<T>``: a type it cannot convert throws."""
    value = data.get(name)
    if not isinstance(value, kinds):
        raise BadScriptingRequest(f"[json.exception.type_error.302] {name}: wrong type")
    return value


def _dump(value):
    """nlohmann's ``dump()``: compact, object keys sorted (std::map), UTF-8 unescaped."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


#: HttpServer::_scripting_request_id: one counter for the process, from 1
_scripting_ids = itertools.count(1)


def scripting_request(body):
    """``(session_id, ScriptingRequest)`` from a POSTed body, as HttpServer::
    SendScriptingRequest (src/HttpServer/HttpServer.cc) reads it: ``session_id``
    (``get<int>``: a number or a bool), ``path`` and ``action`` (strings), ``parameters``
    (any JSON, passed on as its ``dump()``), ``async`` (a bool), optional ``return_path``."""
    try:
        data = json.loads(body, parse_constant=_no_constant)
    except ValueError as e:
        raise BadScriptingRequest(f"[json.exception.parse_error.101] {e}") from None
    if data is None:
        data = {}  # nlohmann's operator[] makes null an object
    if not isinstance(data, dict):
        raise BadScriptingRequest("[json.exception.type_error.305] not an object")
    session_id = int(_field(data, "session_id", (int, float))) & 0xFFFFFFFF  # int -> uint32
    request = icd.messages.ScriptingRequest(
        scripting_request_id=next(_scripting_ids),
        target=_field(data, "path", str),
        action=_field(data, "action", str),
        parameters=_dump(data.get("parameters")),
        return_path=_field(data, "return_path", str) if "return_path" in data else "",
        **{"async": _field(data, "async", bool)},
    )
    return session_id, request


def scripting_answer(response):
    """HttpServer::OnScriptingResponse: ``(status, body)`` for the frontend's response."""
    answer = {"success": response.success}
    if response.message:
        answer["message"] = response.message
    if response.response:
        try:
            answer["response"] = json.loads(response.response)
        except ValueError as e:
            log.warning(f"[json.exception.parse_error.101] {e}")
            return 500, b""
    return 200, _dump(answer).encode()


class ScriptingHandler(ApiHandler):
    """POST /api/scripting/action: HttpServer::HandleScriptingAction. The action goes to the
    connected frontend session ``session_id`` (SessionManager::SendScriptingRequest: 404 when
    there is none) and the request waits for the frontend's answer; 404 if the session closes
    first (Session::CloseAllScriptingRequests). Errors have no body."""

    waiting = None  # (session, scripting_request_id) while the frontend works

    async def post(self):
        try:
            session_id, request = scripting_request(self.request.body)
        except BadScriptingRequest as e:
            log.warning(str(e))
            return self.reply(400)
        session = self.ctx.sessions.get(session_id)
        if session is None:
            return self.reply(404)
        self.waiting = session, request.scripting_request_id
        try:
            response = await session.send_scripting_request(request)
        except asyncio.CancelledError:
            return  # the client went away
        self.waiting = None
        if response is None:
            return self.reply(404)
        status, body = scripting_answer(response)
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(body)

    def on_connection_close(self):
        if self.waiting:  # HttpServer::OnScriptingAbort
            session, scripting_request_id = self.waiting
            session.abort_scripting(scripting_request_id)


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
