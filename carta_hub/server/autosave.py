"""Save the student's CARTA as a workspace before the session ends, and offer it next time.

With ``c.CartaBackend.enable_scripting``, ``c.CartaBackend.autosave_before_end`` seconds
before the session's end (:class:`~carta_hub.server.clock.Clock`: the Slurm job's wall time
or the idle end), the server asks each open CARTA tab to save itself as the workspace
``autosave-<date>-<time>``, once per end. It posts, as carta-python would,
``{"path": "", "action": "saveWorkspace", "parameters": [name]}`` to carta_backend's
``/api/scripting/action`` with the backend's own token (src/HttpServer/HttpServer.cc,
HandleScriptingAction), which passes it to the tab; the frontend (6.0.0,
src/services/ScriptingService.ts, handleScriptingRequest) calls ``AppStore.saveWorkspace
(name)`` (src/stores/AppStore/AppStore.ts), which stores the workspace with ``PUT
<api>/database/workspace {"workspaceName", "workspace"}`` (src/services/ApiService.ts,
setWorkspace): carta_backend's HandleSetObject writes it to
``~/.carta/config/workspaces/<name>.json`` (HttpServer.cc, SetObjectFromString,
WriteObjectFile). It answers ``true`` when saved.

What was saved is recorded in ``~/.carta/carta-hub-autosave.json`` (0600); the next server
of the student (a new job or pod) offers it in CARTA's tab (banner.js) with a link to
CARTA's ``?workspace=<name>``, which the frontend loads at start (AppStore.loadDefaultFiles).

The tab's answer (SCRIPTING_RESPONSE) is a message to carta_backend, which restarts its idle
clock (src/Session/SessionManager.cc, OnMessage): after an idle save the session lasts
``idle_timeout`` longer, and is not saved again until the student uses CARTA.
"""

import asyncio
import json
import logging
import os
import re
import tempfile
import time
from urllib.parse import quote

from tornado import httpclient

from carta_hub.backend import LOOPBACK
from carta_hub.server.clock import server_clock

#: Seconds between looks at the clock (sooner when an end is near).
POLL = 15
SAVE_TIMEOUT = 120
RECORD = "carta-hub-autosave.json"
NAME = re.compile(r"autosave-\d{4}-\d{2}-\d{2}-\d{4}(-\d+)?")


def record_path(home: str) -> str:
    return os.path.join(home, ".carta", RECORD)


def read_record(path: str) -> dict | None:
    """The last autosave recorded in ``path``, if it is one carta-hub wrote and not yet
    offered."""
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("shown"):
        return None
    names = record.get("workspaces")
    if not isinstance(names, list) or not names:
        return None
    if not all(isinstance(n, str) and NAME.fullmatch(n) for n in names):
        return None
    if not isinstance(record.get("saved_at"), (int, float)):
        return None
    return record


def write_record(path: str, record: dict) -> None:
    """Replace ``path`` with ``record``, readable by the student only."""
    folder = os.path.dirname(path)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=".carta-hub-autosave-", dir=folder)  # 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(record, f)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def remove_record(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


async def save_session(port: int, token: str, session_id: int, name: str) -> str | None:
    """Ask CARTA tab ``session_id`` to save itself as workspace ``name``: None when it did,
    else why not."""
    body = {
        "session_id": session_id,
        "path": "",
        "action": "saveWorkspace",
        "parameters": [name],
        "async": False,
    }
    try:
        response = await httpclient.AsyncHTTPClient().fetch(
            f"http://{LOOPBACK}:{port}/api/scripting/action",
            method="POST",
            body=json.dumps(body),
            headers={"carta-auth-token": token, "Content-Type": "application/json"},
            raise_error=False,
            request_timeout=SAVE_TIMEOUT,
        )
    except OSError as e:
        return str(e)
    try:
        answer = json.loads(response.body or b"{}")
    except ValueError:
        answer = {}
    if response.code == 200 and answer.get("success") and answer.get("response") is True:
        return None
    return answer.get("message") or f"CARTA answered {response.code} {answer}"


class Autosave:
    """One server's autosaves: the loop that saves, and the earlier server's save it offers."""

    def __init__(self, state: dict, last_use, log=None):
        self.state, self.last_use = state, last_use
        self.process = state["backend"]  # the BackendProcess
        self.settings = self.process.backend
        self.log = log or logging.getLogger("carta_hub")
        self.path = record_path(self.settings.folder("{home}"))
        self.previous = read_record(self.path)  # to offer in this server's tabs
        self.saved: list[str] = []  # this server's
        self._shown: dict | None = None  # the record this server marked as offered
        self._wall_saved: set[float] = set()  # wall ends saved for
        self._idle_saved = None  # message_at after the last idle save
        self._pending = None  # this server's record while it stands

    @property
    def clock(self):
        """The server's clock, made at its first use (a page's, or the first open tab's): its
        idle end counts from then until CARTA's first message."""
        return server_clock(self.state, self.last_use)

    @property
    def enabled(self) -> bool:
        return self.settings.scripting and self.settings.autosave_before_end > 0

    def lead(self, reason: str) -> float:
        lead = self.settings.autosave_before_end
        return min(lead, self.settings.idle_timeout / 2) if reason == "idle" else lead

    def due(self, reason: str, ends_at: float) -> bool:
        if reason == "idle":  # once until the student uses CARTA again
            return self._idle_saved is None or self.last_use.message_at != self._idle_saved
        return ends_at not in self._wall_saved

    async def run(self) -> None:
        while True:
            try:
                wait = await self.check()
            except Exception:  # never end the loop: the next end must still be saved
                self.log.exception("CARTA autosave failed")
                wait = POLL
            await asyncio.sleep(wait)

    async def check(self) -> float:
        """Save if an end is near; the seconds until the next look."""
        if not self.process.running or not self.process.sessions.models():
            return POLL  # no open tab to save (or to come back from a save)
        ends_at, reason, wall = await self.clock.end()
        self.withdraw(wall, {s["session_id"] for s in self.process.sessions.models()})
        if ends_at is None:
            return POLL
        wait = ends_at - self.lead(reason) - time.time()
        if wait > 0:
            return max(1, min(POLL, wait))
        if self.due(reason, ends_at):
            await self.save(reason, ends_at)
        return POLL

    def withdraw(self, wall: float | None, open_ids: set[int]) -> None:
        """A saved tab is still open and its session did not end when saved for (the
        student came back, or extended): the next session has nothing to offer."""
        pending = self._pending
        if pending is None or not open_ids & set(pending["sessions"]):
            return  # the saved tabs' sessions ended: the save stands
        used = pending["reason"] == "idle" and self.last_use.message_at != self._idle_saved
        if used or (pending["reason"] == "wall time" and wall not in (None, pending["end"])):
            remove_record(self.path)
            self._pending = None

    async def save(self, reason: str, ends_at: float) -> None:
        if self.process.home_problem:
            return  # the workspace would be saved in this session's temporary home
        sessions = self.process.sessions.models()
        stamp = time.strftime("%Y-%m-%d-%H%M")
        names, ids = [], []
        for i, session in enumerate(sessions):
            name = f"autosave-{stamp}" + (f"-{i + 1}" if i else "")
            port, token = self.process.port, self.process.token
            problem = await save_session(port, token, session["session_id"], name)
            if problem:
                self.log.warning(
                    "CARTA session %s not autosaved: %s", session["session_id"], problem
                )
            else:
                self.log.info(
                    "CARTA session %s saved as workspace %s (%s end)",
                    session["session_id"],
                    name,
                    reason,
                )
                names.append(name)
                ids.append(session["session_id"])
        if reason == "idle":
            self._idle_saved = self.last_use.message_at  # moved by the tabs' answers
        else:
            self._wall_saved.add(ends_at)
        if names:
            self.saved += names
            record = {"workspaces": names, "saved_at": time.time(), "reason": reason}
            write_record(self.path, record)
            self._pending = {"record": record, "reason": reason, "end": ends_at, "sessions": ids}

    def offer(self) -> dict | None:
        """The save to offer: an earlier server's, or this server's once the saved tabs'
        sessions have ended (CARTA dropped them as idle; the student opened CARTA again)."""
        if self.previous:
            return self.previous
        pending = self._pending
        open_ids = {s["session_id"] for s in self.process.sessions.models()}
        if pending and self.process.running and not open_ids & set(pending["sessions"]):
            return pending["record"]
        return None

    def page_model(self, carta_url: str, reason: str | None) -> dict:
        """For GET carta-hub/session: what this server saved, and the save to offer
        (offered once: a later server does not offer it again)."""
        restore = None
        if record := self.offer():
            names = record["workspaces"]
            restore = {
                "workspaces": names,
                "url": f"{carta_url}?workspace={quote(names[0])}",
                "saved_at": record["saved_at"],
                "reason": record.get("reason"),
            }
            if self._shown is not record:
                self._shown = record
                self._mark_shown(record)
        return {
            "autosave": {
                "lead": self.lead(reason) if self.enabled and reason else 0,
                "saved": self.saved,
            },
            "restore": restore,
        }

    def _mark_shown(self, record: dict) -> None:
        if read_record(self.path) == record:  # not replaced by a newer save
            try:
                write_record(self.path, {**record, "shown": True})
            except OSError as e:
                self.log.warning("Could not update %s: %s", self.path, e)


def autosaver(state: dict, last_use, log=None) -> Autosave:
    """The server's :class:`Autosave` (``state``: the routes' state), made at its first use."""
    if "autosave" not in state:
        state["autosave"] = Autosave(state, last_use, log)
    return state["autosave"]


def start(state: dict, last_use, log) -> None:
    """Start saving before the end (with the event loop running), when the settings ask."""
    saver = autosaver(state, last_use, log)
    if not saver.enabled:
        return
    if saver.settings.verbosity < 4:
        log.warning(
            "c.CartaBackend.autosave_before_end needs c.CartaBackend.verbosity 4 or more "
            "(the open CARTA tabs are found in its log): nothing will be saved"
        )
    state["autosave_task"] = asyncio.ensure_future(saver.run())
