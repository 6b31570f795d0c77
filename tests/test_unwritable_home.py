"""A home where CARTA cannot keep ~/.carta (read-only, not enterable, full), on a real Hub +
configurable-http-proxy with CARTA-only servers run as an unprivileged user and the stand-in
backend ``carta-standin`` (NOT CARTA), which fails there as carta_backend does: a save that
answers 200 and keeps nothing, a backend ended by a filesystem error, a 500.

The student's changes work for the session (kept in a private temporary HOME of the backend),
the page says they are not kept, the real home is left as it was, and the temporary folder
is gone when the server stops."""

import contextlib
import json
import stat
import subprocess
from pathlib import Path

import pytest
from helpers.browser import Student, browser  # noqa: F401  (fixture)
from helpers.client import open_carta
from helpers.hub import SAME_USER_CARTA
from helpers.procs import user_processes
from playwright.sync_api import expect

SAVED = {"version": 2, "colormap": "viridis", "telemetryMode": "none"}
NOTICE = "CARTA keeps changes to preferences, layouts and snippets for this session only"


@pytest.fixture(scope="module")
def hub(hub_factory):
    # offline: the notice must show under the page's Content-Security-Policy
    return hub_factory(SAME_USER_CARTA + "c.CartaBackend.offline = True\n")


def make_home(hub, owner, name, saved=True):
    """``name``'s home, owned by the servers' unix user, with saved preferences."""
    home = hub.workdir / "homes" / name
    config = home / ".carta" / "config"
    config.mkdir(parents=True)
    if saved:
        (config / "preferences.json").write_text(json.dumps(SAVED))
    subprocess.run(["chown", "-R", owner.pw_name, str(home)], check=True)
    return home


@contextlib.contextmanager
def unusable(home, how, owner):
    carta = home / ".carta"
    if how == "read-only":  # e.g. a read-only mount of the home
        for path in (carta / "config" / "preferences.json", carta / "config", carta):
            path.chmod(0o555 if path.is_dir() else 0o444)
        yield
        return
    if how == "not enterable":  # e.g. left behind by CARTA once run with sudo
        carta.chmod(0)
        yield
        carta.chmod(0o700)
        return
    # full: a filled 1 MiB tmpfs over the home (without ~/.carta yet)
    options = f"size=1m,mode=700,uid={owner.pw_uid},gid={owner.pw_gid}"
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(home)], check=True)
    try:
        with contextlib.suppress(OSError), open(home / "filler", "wb") as f:
            while True:
                f.write(b"x" * 4096)
                f.flush()
        yield
    finally:
        subprocess.run(["umount", "--lazy", str(home)], check=True)


def backend_home(name):
    """HOME of ``name``'s running carta-standin."""
    for _, env in user_processes(name):
        return Path(env[b"HOME"].decode())
    raise AssertionError(f"no backend of {name}")


def tree(home):
    return sorted(
        (str(p.relative_to(home)), p.read_bytes() if p.is_file() else None) for p in home.rglob("*")
    )


@pytest.mark.parametrize("how", ["read-only", "not enterable", "full"])
def test_changes_are_kept_for_the_session(hub, hub_unix_user, how):
    name = f"home-{how.replace(' ', '-')}"
    home = make_home(hub, hub_unix_user, name)
    with unusable(home, how, hub_unix_user):
        before = tree(home) if how != "not enterable" else None
        hub.start_server(name)
        session = hub.login(name)
        page = open_carta(hub, session, name)
        assert page.status_code == 200 and "<title>CARTA</title>" in page.text
        assert NOTICE in page.text
        assert f"Your home folder is {'full' if how == 'full' else 'not writable'}" in page.text
        prefs = hub.user_url(name, "api/database/preferences")
        shown = session.get(prefs)
        assert shown.status_code == 200
        if how == "read-only":  # the student's saved preferences are still there
            assert shown.json()["preferences"]["colormap"] == "viridis"
        assert session.put(prefs, json={"colormap": "magma"}).status_code == 200
        assert session.get(prefs).json()["preferences"]["colormap"] == "magma"
        layout = hub.user_url(name, "api/database/layout")
        assert session.put(layout, json={"layoutName": "mine", "layout": {"a": 1}}).ok
        assert session.get(hub.user_url(name, "api/database/layout/mine")).ok

        private = backend_home(name)
        assert private != home and not private.is_relative_to(home)
        info = private.stat()
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (hub_unix_user.pw_uid, 0o700)
        if before is not None:
            assert tree(home) == before  # nothing written into the real home
        hub.stop_server(name)
        assert not private.exists()
    if how != "full":
        assert json.loads((home / ".carta/config/preferences.json").read_text()) == SAVED


def test_writable_home_keeps_changes_without_a_notice(hub, hub_unix_user):
    name = "home-fine"
    home = make_home(hub, hub_unix_user, name, saved=False)
    hub.start_server(name)
    session = hub.login(name)
    assert NOTICE not in open_carta(hub, session, name).text
    assert backend_home(name) == home
    prefs = hub.user_url(name, "api/database/preferences")
    assert session.put(prefs, json={"colormap": "magma"}).status_code == 200
    hub.stop_server(name)
    saved = json.loads((home / ".carta/config/preferences.json").read_text())
    assert saved["colormap"] == "magma"
    assert sorted(p.name for p in (home / ".carta/config").iterdir()) == ["preferences.json"]


# CARTA's controls whose box meets the notice's, and what a click at the notice's centre hits
UNDER_NOTICE = """() => {
    const notice = document.getElementById("carta-hub-notice").getBoundingClientRect();
    const controls = [...document.querySelectorAll(
        "button, a, input, select, textarea, [role=button], [role=menuitem], [tabindex]")]
        .filter(e => e.id !== "carta-hub-notice" && e.getClientRects().length);
    const meets = r => r.left < notice.right && notice.left < r.right &&
                       r.top < notice.bottom && notice.top < r.bottom;
    const hit = document.elementFromPoint((notice.left + notice.right) / 2,
                                          (notice.top + notice.bottom) / 2);
    return {controls: controls.filter(e => meets(e.getBoundingClientRect())).length,
            hit: hit ? hit.id : null};
}"""


def test_notice_in_the_browser_leaves_carta_usable(
    browser,  # noqa: F811
    hub,
    hub_unix_user,
    artifacts,
):
    """The real frontend in Chromium: the notice shows with CARTA connected, clicks at it
    reach CARTA (pointer-events: none), and it fades after 30 s."""
    name = "home-browser"
    home = make_home(hub, hub_unix_user, name)
    with unusable(home, "read-only", hub_unix_user):
        hub.start_server(name)
        with Student(browser, artifacts, "unwritable-home") as student:
            student.login(hub.url, name, hub.password)
            student.page.wait_for_url(hub.user_url(name) + "**")
            student.wait_connected()
            notice = student.page.locator("#carta-hub-notice")
            expect(notice).to_be_visible()
            expect(notice).to_contain_text("Your home folder is not writable")
            student.assert_healthy()
            under = student.page.evaluate(UNDER_NOTICE)
            assert under["hit"] != "carta-hub-notice", under
            style = notice.evaluate(
                "e => [getComputedStyle(e).pointerEvents, getComputedStyle(e).animationDelay]"
            )
            assert style == ["none", "30s"], style
            student.screenshot()
            print("CARTA controls under the notice:", under["controls"])
        hub.stop_server(name)
