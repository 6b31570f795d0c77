"""Session count and carta_backend's exit timers (--exit_timeout, --initial_timeout).

``--idle_timeout`` is per session and lives in :mod:`.session`: like carta_backend it only
disconnects the idle client; the process then exits through ``--exit_timeout`` if that is set.
"""

from tornado.ioloop import IOLoop

from carta_standin import log


class Lifecycle:
    """Counts connected sessions and calls ``stop()`` when a timeout says the process ends.

    ``exit_timeout``: seconds after the last session closed (no new one meanwhile);
    ``initial_timeout``: seconds after start without any session. Negative: off.
    """

    def __init__(self, exit_timeout, initial_timeout, stop):
        self.exit_timeout = exit_timeout
        self.initial_timeout = initial_timeout
        self.stop = stop
        self.sessions = 0
        self._timer = None

    def start(self):
        if self.initial_timeout >= 0:
            self._schedule(self.initial_timeout)

    def connected(self):
        self.sessions += 1
        self._cancel()

    def disconnected(self):
        self.sessions -= 1
        if self.sessions == 0:
            log.info("No remaining sessions.")
            if self.exit_timeout >= 0:
                self._schedule(self.exit_timeout)

    def _schedule(self, seconds):
        self._cancel()
        self._timer = IOLoop.current().call_later(seconds, self._expire)

    def _cancel(self):
        if self._timer is not None:
            IOLoop.current().remove_timeout(self._timer)
            self._timer = None

    def _expire(self):
        self._timer = None
        if self.sessions == 0:
            log.info("No sessions timeout.")
            self.stop()
