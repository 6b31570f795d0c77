"""Save before the end (issue 21), the rules, with a clock and a CARTA tab of our own (the
whole path in Chromium: tests/test_autosave.py): once per wall-time end and again after an
extend, once per idle period and never sooner than half the idle timeout, nothing with
scripting off or at 0, the record private in the home and offered by the next server only,
a record naming anything but an autosave ignored."""

import dataclasses
import re
import stat
import time
from types import SimpleNamespace

import pytest

from carta_hub import usercontext
from carta_hub.backend import CartaBackend
from carta_hub.server import autosave

NAME = re.compile(r"autosave-\d{4}-\d{2}-\d{2}-\d{4}")


class FakeClock:
    def __init__(self):
        self.ends_at, self.reason, self.wall = None, None, None
        self.last_use = SimpleNamespace(message_at=None)

    async def end(self):
        return self.ends_at, self.reason, self.wall


@pytest.fixture
def saver(tmp_path, monkeypatch):
    """An Autosave of a server whose one tab saves itself (counted in ``saver.posts``)."""
    user = usercontext.UserContext.of_this_process()
    backend = CartaBackend(
        enable_scripting=True,
        idle_timeout=600,
        user_context=dataclasses.replace(user, home=str(tmp_path)),
    )
    process = SimpleNamespace(
        backend=backend,
        home_problem=None,
        running=True,
        port=1,
        token="t",
    )
    process.open = [{"session_id": 7}]  # the tabs CARTA logged as connected
    process.sessions = SimpleNamespace(models=lambda: process.open)
    posts = []

    async def save_session(port, token, session_id, name):
        posts.append(name)
        clock.last_use.message_at = time.time()  # the tab's answer is a message to CARTA

    monkeypatch.setattr(autosave, "save_session", save_session)
    clock = FakeClock()
    saver = autosave.Autosave({"backend": process, "clock": clock}, clock.last_use)
    saver.posts, saver.home = posts, tmp_path
    return saver


async def test_wall_time_saved_once_per_end(saver):
    clock = saver.clock
    clock.reason = "wall time"
    clock.ends_at = clock.wall = time.time() + 301
    assert await saver.check() <= autosave.POLL and saver.posts == []  # not yet
    clock.ends_at = clock.wall = time.time() + 299
    await saver.check()
    await saver.check()
    assert len(saver.posts) == 1
    assert NAME.fullmatch(saver.posts[0])
    clock.ends_at = clock.wall = clock.ends_at + 3600  # extended: the record is withdrawn
    await saver.check()
    assert not (saver.home / ".carta" / autosave.RECORD).exists()
    clock.ends_at = clock.wall = time.time() + 200  # a new end: saved again
    await saver.check()
    assert len(saver.posts) == 2


async def test_idle_saved_once_until_used(saver):
    clock = saver.clock
    clock.reason, clock.ends_at = "idle", time.time() + 299
    await saver.check()
    assert len(saver.posts) == 1
    clock.ends_at = time.time() + 200  # the save's answer restarted CARTA's idle clock
    await saver.check()
    assert len(saver.posts) == 1
    clock.last_use.message_at = time.time() + 1  # the student used CARTA, then left
    await saver.check()
    assert len(saver.posts) == 2


async def test_idle_lead_at_most_half_the_timeout(saver):
    clock = saver.clock
    clock.reason, clock.ends_at = "idle", time.time() + 290  # 10 s after the last action
    saver.settings.idle_timeout = 300
    await saver.check()
    assert saver.posts == []


def test_nothing_saved_without_scripting(saver):
    saver.settings.enable_scripting = False
    assert not saver.enabled
    saver.settings.enable_scripting, saver.settings.autosave_before_end = True, 0
    assert not saver.enabled


async def test_record_private_and_offered_once(saver):
    clock = saver.clock
    clock.reason = "wall time"
    clock.ends_at = clock.wall = time.time() + 100
    await saver.check()
    record = saver.home / ".carta" / autosave.RECORD
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    assert saver.page_model("/user/x/", None)["restore"] is None  # this server's own save
    following = autosave.Autosave({**saver.state, "clock": FakeClock()}, saver.last_use)
    restore = following.page_model("/user/x/", None)["restore"]
    assert restore["url"] == f"/user/x/?workspace={saver.posts[0]}"
    assert restore["reason"] == "wall time"
    third = autosave.Autosave({**saver.state, "clock": FakeClock()}, saver.last_use)
    assert third.page_model("/", None)["restore"] is None


def test_a_record_naming_other_files_is_ignored(saver):
    record = saver.home / ".carta" / autosave.RECORD
    autosave.write_record(str(record), {"workspaces": ["../../x"], "saved_at": 1})
    assert autosave.Autosave(saver.state, saver.last_use).previous is None


async def test_idle_save_withdrawn_when_the_student_comes_back(saver):
    clock, record = saver.clock, saver.home / ".carta" / autosave.RECORD
    clock.reason, clock.ends_at = "idle", time.time() + 200
    await saver.check()
    assert record.exists()
    clock.last_use.message_at = time.time() + 1  # the saved tab is used again
    clock.ends_at = time.time() + 600
    await saver.check()
    assert not record.exists()


async def test_idle_save_offered_when_its_session_was_dropped(saver):
    clock = saver.clock
    clock.reason, clock.ends_at = "idle", time.time() + 200
    await saver.check()
    saver.process.open = [{"session_id": 8}]  # CARTA dropped the tab; the student reopened it
    clock.last_use.message_at = time.time() + 1
    clock.ends_at = time.time() + 600
    await saver.check()
    restore = saver.page_model("/user/x/", "idle")["restore"]
    assert restore["workspaces"] == saver.posts and restore["reason"] == "idle"
