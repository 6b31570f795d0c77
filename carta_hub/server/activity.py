"""Tell the Hub about real use only, so idle culling sees idle sessions as idle.

The stock standalone proxy posts "active" every interval whatever happens; here
``record()`` is called for HTTP requests and interactive websocket frames, and the reporter
posts to the Hub only when something was recorded since its last post.
"""

import os
from datetime import datetime, timezone

from tornado import ioloop

from carta_hub.server import hubapi


def isoformat(moment):
    return moment.isoformat().replace("+00:00", "Z")


class ActivityReporter:
    """Collects activity and posts it to ``$JUPYTERHUB_ACTIVITY_URL`` every ``interval`` s."""

    def __init__(self, interval, log):
        self.interval = interval
        self.log = log
        self.last_activity = None
        self._reported = None
        self.url = os.environ.get("JUPYTERHUB_ACTIVITY_URL")
        self.token = os.environ.get("JUPYTERHUB_API_TOKEN")
        self.server_name = os.environ.get("JUPYTERHUB_SERVER_NAME", "")

    def record(self):
        self.last_activity = datetime.now(timezone.utc)

    def start(self):
        if not (self.url and self.token):
            self.log.warning("JUPYTERHUB_ACTIVITY_URL is not set: not reporting activity")
            return
        ioloop.PeriodicCallback(self.report, self.interval * 1000).start()

    async def report(self):
        moment = self.last_activity
        if moment is None or moment == self._reported:
            return
        stamp = isoformat(moment)
        body = {"last_activity": stamp, "servers": {self.server_name: {"last_activity": stamp}}}
        try:
            await hubapi.post(self.url, body)
            self._reported = moment
        except Exception as e:  # the Hub may be restarting: try again next interval
            self.log.warning("Could not report activity to the Hub: %s", e)
