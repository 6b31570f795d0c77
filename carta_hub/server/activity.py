"""Count real use only, so idle culling sees idle sessions as idle.

Real use is an HTTP request (jupyter-server-proxy's ``update_last_activity`` hook calls
:func:`count_request`) or a binary websocket frame from the browser (the relay threads of
:mod:`carta_hub.server.tunnel`); CARTA's PINGs are not. Both only stamp a :class:`LastUse`,
which code on the event loop reads: :class:`ActivityReporter` posts it to the Hub
(CARTA-only server), :func:`publish` hands it to the Jupyter Server (the JupyterLab tile).
The stock standalone proxy posts "active" every interval whatever happens.
"""

import os
import time
from datetime import datetime, timezone

from tornado import ioloop

from carta_hub.server import hubapi

#: The web application setting that holds the server's :class:`LastUse`.
SETTING = "carta_last_use"
#: A Jupyter Server counts every ``*_last_activity`` setting as its own activity
#: (ServerApp.last_activity), which jupyterhub-singleuser reports to the Hub.
JUPYTER_SETTING = "carta_last_activity"
PUBLISH_SECONDS = 5


def isoformat(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


class LastUse:
    """When CARTA was last used. :meth:`touch` is one assignment, safe from any thread (all
    the relay threads do); :attr:`when` is read on the event loop."""

    def __init__(self) -> None:
        self._seen: float | None = None
        self._message: float | None = None

    def touch(self) -> None:
        self._seen = time.time()

    def touch_message(self) -> None:
        """A websocket connection or binary frame from the browser: use, and what restarts
        carta_backend's --idle_timeout clock (src/Session/SessionManager.cc, the message
        handler, and the Session constructor call Session::UpdateLastMessageTimestamp)."""
        self._seen = self._message = time.time()

    @property
    def message_at(self) -> float | None:
        """Epoch seconds of the last :meth:`touch_message` (None: none yet)."""
        return self._message

    @property
    def when(self) -> datetime | None:
        seen = self._seen
        return None if seen is None else datetime.fromtimestamp(seen, timezone.utc)


def count_request(handler) -> bool:
    """jupyter-server-proxy's ``update_last_activity`` callable: every proxied HTTP request
    is use (jupyter-server-proxy then also records it for a Jupyter Server)."""
    handler.settings[SETTING].touch()
    return True


def publish(settings: dict) -> None:
    """Copy the server's last use into the Jupyter Server's activity every few seconds
    (started on the event loop)."""
    last_use = settings[SETTING]

    def copy():
        if (when := last_use.when) is not None:
            settings[JUPYTER_SETTING] = when

    ioloop.PeriodicCallback(copy, PUBLISH_SECONDS * 1000).start()


class ActivityReporter:
    """Posts ``last_use`` to ``$JUPYTERHUB_ACTIVITY_URL`` every ``interval`` s when it moved
    since the last post."""

    def __init__(self, last_use: LastUse, interval: int, log):
        self.last_use = last_use
        self.interval = interval
        self.log = log
        self._reported = None
        self.url = os.environ.get("JUPYTERHUB_ACTIVITY_URL")
        self.token = os.environ.get("JUPYTERHUB_API_TOKEN")
        self.server_name = os.environ.get("JUPYTERHUB_SERVER_NAME", "")

    def start(self) -> None:
        if not (self.url and self.token):
            self.log.warning("JUPYTERHUB_ACTIVITY_URL is not set: not reporting activity")
            return
        ioloop.PeriodicCallback(self.report, self.interval * 1000).start()

    async def report(self) -> None:
        moment = self.last_use.when
        if moment is None or moment == self._reported:
            return
        stamp = isoformat(moment)
        body = {"last_activity": stamp, "servers": {self.server_name: {"last_activity": stamp}}}
        try:
            await hubapi.post(self.url, body)
            self._reported = moment
        except Exception as e:  # the Hub may be restarting: try again next interval
            self.log.warning("Could not report activity to the Hub: %s", e)
