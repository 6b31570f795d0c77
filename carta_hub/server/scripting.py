"""Scripting CARTA from a notebook (carta-python) through the user's server.

carta-python (carta/protocol.py, ``Protocol.request_scripting_action``) sends
``POST <CARTA URL>/api/scripting/action`` with ``Authorization: Bearer <token>`` and a JSON
body ``{"session_id", "path", "action", "parameters", "async"[, "return_path"]}``. Here the
token is the student's JupyterHub token, which the server's authentication (Hub OAuth, or the
Jupyter Server's) checks like any other request; the proxy then sends the backend its own
token instead (``carta-auth-token``) and never the student's. A request authenticated by a
cookie must also pass the XSRF rule of the mode (JupyterHub's, or the Jupyter Server's): a
page cannot drive CARTA with the student's cookies.

carta_backend passes the action to the frontend session ``session_id`` and answers with the
frontend's response (src/HttpServer/HttpServer.cc, HandleScriptingAction). The student finds
the id of their open CARTA tab with ``GET <server>/carta-hub/sessions``, which lists the
sessions the backend logged as connected and not yet deleted.
"""

import re
import time

from tornado import web

from carta_hub.server.routes import Route

#: carta_backend's scripting route (src/HttpServer/HttpServer.cc, RegisterRoutes), with the
#: slashes the proxy would pass on
SCRIPTING_ROUTE = re.compile(r"/*api/+scripting/+action/*")
#: a request URL's path that reaches it
SCRIPTING_URL = re.compile(r"/api/+scripting/+action/*$")
SCRIPTING_OFF = (
    "Scripting is off on this Hub: CARTA was started without --enable_scripting. "
    "Ask the Hub's operator to set c.CartaBackend.enable_scripting = True."
)
NOT_RUNNING = "CARTA is not running: open CARTA in a browser tab first, then run the script."
QUIET = (
    "CARTA logs its sessions at verbosity 4 and above; c.CartaBackend.verbosity is {}, so "
    "open sessions cannot be listed here."
)

# carta_backend's info lines (src/Session/SessionManager.cc): OnConnect logs the id it keeps
# the session under (the id a scripting request names), DeleteSession the session's own id,
# which Session::OnRegisterViewer (src/Session/Session.cc) changes when a frontend resumes an
# earlier session. Anchored at the end: the address is the client's X-Forwarded-For.
CONNECTED = re.compile(r"\] Session (\d+) \[(.*)\] Connected\. Num sessions: \d+$")
DELETED = re.compile(r"\] Session (\d+) \[(.*)\] Deleted\. Remaining sessions: \d+$")
RESUMED = re.compile(r"\] \(\w+\) Session setting id to (\d+) \(was (\d+)\) on resume$")


def is_scripting(path: str) -> bool:
    """``path`` (as proxied) is carta_backend's scripting route."""
    return SCRIPTING_ROUTE.fullmatch(path) is not None


class LiveSessions:
    """The backend's connected sessions, from its log lines."""

    def __init__(self) -> None:
        self._sessions: dict[int, dict] = {}  # scripting id -> model
        self._own_ids: dict[int, int] = {}  # scripting id -> the session's own id

    def feed(self, line: str) -> None:
        """Take one line of the backend's output (without colours)."""
        if found := CONNECTED.search(line):
            key = int(found.group(1))
            self._sessions[key] = {
                "session_id": key,
                "address": found.group(2),
                "connected_at": time.time(),
            }
            self._own_ids[key] = key
        elif found := RESUMED.search(line):
            new, old = int(found.group(1)), int(found.group(2))
            for key, own in self._own_ids.items():
                if own == old:
                    self._own_ids[key] = new
                    break
        elif found := DELETED.search(line):
            own = int(found.group(1))
            key = next((k for k, o in self._own_ids.items() if o == own), own)
            self._sessions.pop(key, None)
            self._own_ids.pop(key, None)

    def clear(self) -> None:
        """The backend ended: no session is left."""
        self._sessions.clear()
        self._own_ids.clear()

    def models(self) -> list[dict]:
        """The open sessions, oldest first."""
        return list(self._sessions.values())


def check_action(handler, token_authenticated: bool) -> None:
    """Refuse a scripting request the proxy must not pass on: a cookie-authenticated one
    without the mode's XSRF token (``handler.check_scripting_xsrf``), any while scripting is
    off (501, as carta_backend answers, with why) or while CARTA does not run (404, as the
    backend answers for a session it does not know)."""
    if not token_authenticated:
        handler.check_scripting_xsrf()
    if not handler.backend.backend.scripting:
        raise web.HTTPError(501, SCRIPTING_OFF, reason="Scripting is off")
    if not handler.backend.running:
        raise web.HTTPError(404, NOT_RUNNING, reason="CARTA is not running")


class Sessions(Route):
    """``GET <server>/carta-hub/sessions``: ``{"scripting": bool, "carta_url": path,
    "sessions": [{"session_id", "address", "connected_at"}], "message": str}``."""

    path = "sessions"

    def get(self) -> None:
        backend = self.backend.backend
        message = ""
        if not backend.scripting:
            message = SCRIPTING_OFF
        elif backend.verbosity < 4:
            message = QUIET.format(backend.verbosity)
        elif not self.backend.running:
            message = NOT_RUNNING
        self.write_json(
            {
                "scripting": backend.scripting,
                "carta_url": self.carta_url(),
                "sessions": self.backend.sessions.models() if self.backend.running else [],
                "message": message,
            }
        )
