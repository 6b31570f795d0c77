"""Learn at once that a local server process ended.

JupyterHub polls a server every ``Spawner.poll_interval`` (30 s by default) and only then
removes its proxy route: until then, another user of the machine could bind the freed port
and receive the student's requests and cookies. A pidfd (``pidfd_open(2)``, Linux 5.3+)
becomes readable when its process ends, so the Hub can poll right away.
"""

import asyncio
import os
from collections.abc import Callable

from tornado.ioloop import PeriodicCallback

FALLBACK_SECONDS = 1  # without pidfd_open: check this often


def when_ended(pid: int, check: Callable[[], None]) -> Callable[[], None]:
    """Call ``check()`` as soon as process ``pid`` has ended (without pidfd support: every
    FALLBACK_SECONDS, so ``check`` must find out itself). Returns a function that cancels."""
    loop = asyncio.get_running_loop()
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return loop.call_soon(check).cancel
    except OSError:  # ENOSYS: an older kernel
        periodic = PeriodicCallback(check, FALLBACK_SECONDS * 1000)
        periodic.start()
        return periodic.stop

    def cancel():
        nonlocal fd
        if fd is not None:
            loop.remove_reader(fd)
            os.close(fd)
            fd = None

    def ended():
        cancel()
        check()

    loop.add_reader(fd, ended)
    return cancel
