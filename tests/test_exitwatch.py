"""carta_hub.hub.exitwatch: the local spawner learns of its server's end at once (pidfd), or
checks every second where the kernel has no pidfd_open (Linux < 5.3)."""

import asyncio
import errno
import os
import time

import pytest

from carta_hub.hub import exitwatch

pytestmark = pytest.mark.fast


async def test_called_when_the_process_ends_not_before():
    proc = await asyncio.create_subprocess_exec("sleep", "30")
    called = []
    cancel = exitwatch.when_ended(proc.pid, lambda: called.append(time.monotonic()))
    await asyncio.sleep(0.5)
    assert not called
    proc.kill()
    killed = time.monotonic()
    await proc.wait()
    await asyncio.sleep(0.2)
    assert len(called) == 1 and called[0] - killed < 0.2
    cancel()  # after the call: harmless


async def test_cancelled_watch_calls_nothing():
    proc = await asyncio.create_subprocess_exec("sleep", "30")
    called = []
    exitwatch.when_ended(proc.pid, lambda: called.append(1))()
    proc.kill()
    await proc.wait()
    await asyncio.sleep(0.2)
    assert not called


async def test_without_pidfd_checks_every_second(monkeypatch):
    def no_pidfd(pid):
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))

    monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    called = []
    cancel = exitwatch.when_ended(os.getpid(), lambda: called.append(1))
    await asyncio.sleep(2.5)
    cancel()
    checks = len(called)
    assert checks >= 1  # the caller's check (the spawner's poll) runs every second
    await asyncio.sleep(1.2)
    assert len(called) == checks
