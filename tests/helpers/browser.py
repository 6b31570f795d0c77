"""A real browser for the acceptance tests: Debian's Chromium driven by Playwright (sync API).

    from helpers.browser import browser, Student  # noqa: F401  (browser is a fixture)

    def test_x(browser, hub, artifacts):
        with Student(browser, artifacts, "x") as student:
            student.login(hub.url, "alice", hub.password)
            student.page.goto(hub.user_url("alice"))
            student.wait_connected()
            assert "alice-cube.fits" in student.files("alice-cube.fits")
            student.screenshot()

Everything waits on the page's own state (the frontend's connection icon and console line,
its File Browser rows, the Hub's progress messages), never on sleeps. A :class:`Student` is
one fresh browser context (its own cookies and local storage) and records every request and
console line of all its tabs.
"""

import re
import shutil
import time
from urllib.parse import urlparse

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect, sync_playwright

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Playwright's own browser download does not work here: Debian's chromium, quiet (no Google
# services, updates or QUIC probes, so every request counted comes from the page itself).
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 800}
LOOPBACK = re.compile(r"^(127\.\d+\.\d+\.\d+|localhost|\[::1\]|::1)$")
CONNECTED = re.compile(r"Connected with session ID (\d+)")

# The frontend's own DOM (carta-frontend 6.0.0)
ONLINE = ".connectivity-icon.online"  # the status dot: "Connected to server"
OFFLINE = ".connectivity-icon.offline"  # "Disconnected from server"
FILE_BROWSER = '[data-testid="file-browser-dialog"]'
FILE_NAMES = '[data-testid="file-list"] .bp6-table-cell-col-0 .cell-text'  # files and folders
BREADCRUMBS = ".path-breadcrumbs .folder-breadcrumb"
CONSENT = "CARTA Usage Data"


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium per test module."""
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


def is_loopback(url):
    """True for loopback hosts, and for URLs that name no host (data:, blob:)."""
    parsed = urlparse(url)
    return not parsed.scheme.startswith(("http", "ws")) or bool(
        LOOPBACK.match(parsed.hostname or "")
    )


class Student:
    """One student's browser (a fresh context): ``page`` is the current tab."""

    def __init__(self, browser, artifacts, name, timeout=60):
        self.artifacts, self.name, self.timeout = artifacts, name, timeout
        self.context = browser.new_context(viewport=VIEWPORT)
        self.context.set_default_timeout(timeout * 1000)
        self.requests, self.console = [], []  # playwright Requests; console texts
        self.context.on("request", lambda request: self.requests.append(request))
        self.context.on("console", lambda message: self.console.append(message.text))
        self.page = self.context.new_page()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is not None:  # leave a picture of what went wrong
            try:
                self.screenshot(f"{self.name}-FAILED")
            except PlaywrightError as e:  # the test's own error matters more
                print(f"no screenshot of the failure: {e}")
        self.context.close()

    # --- the Hub ---

    def login(self, hub_url, username, password):
        """The Hub's login form, as a student fills it in."""
        self.page.goto(f"{hub_url}/hub/login")
        self.page.fill("#username_input", username)
        self.page.fill("#password_input", password)
        with self.page.expect_navigation():
            self.page.click("#login_submit")
        assert "/hub/login" not in self.page.url, self.page.content()[-2000:]

    # --- CARTA ---

    def wait_connected(self, page=None, since=0):
        """Wait until the frontend says it is connected (its status dot, its console line
        "Connected with session ID N" logged after console line number ``since``, the same N
        in its status info); return N."""
        page = page or self.page
        page.wait_for_selector(ONLINE)
        session = self.wait_console(CONNECTED, since).group(1)
        expect(page.locator("#info-session-id")).to_have_text(session, timeout=self.timeout * 1000)
        return session

    def wait_console(self, pattern, since=0):
        """The first match of ``pattern`` in the console lines (of any tab) from number
        ``since`` on, waiting for it if it has not been logged yet."""
        pattern, deadline = re.compile(pattern), time.monotonic() + self.timeout
        while True:
            for line in self.console[since:]:
                if match := pattern.search(line):
                    return match
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"no console line matching {pattern.pattern!r}:\n"
                    + "\n".join(self.console[since:])
                )
            # our own listener was added first: it has recorded the line when this returns
            self.context.wait_for_event("console", timeout=left * 1000)

    def connected_sessions(self):
        return [m.group(1) for m in map(CONNECTED.search, self.console) if m]

    def files(self, *expected, page=None):
        """The names in the File Browser once every name of ``expected`` is listed."""
        page = page or self.page
        page.wait_for_selector(FILE_BROWSER)
        for name in expected:
            exact = re.compile(f"^{re.escape(name)}$")
            expect(page.locator(FILE_NAMES, has_text=exact)).to_have_count(
                1, timeout=self.timeout * 1000
            )
        return page.locator(FILE_NAMES).all_inner_texts()

    def folder(self, page=None):
        """The File Browser's breadcrumb path below the top-level folder, e.g. ['obs', 'm51']."""
        page = page or self.page
        page.wait_for_selector(FILE_BROWSER)
        return [t.strip() for t in page.locator(BREADCRUMBS).all_inner_texts() if t.strip()]

    def assert_healthy(self, page=None):
        """No disconnected icon, no disconnect alert or error toast, no consent dialog."""
        page = page or self.page
        assert page.locator(OFFLINE).count() == 0, "CARTA shows 'Disconnected from server'"
        text = page.inner_text("body")
        for bad in ("You have been disconnected", "Disconnected from server", CONSENT):
            assert bad not in text, f"{bad!r} is shown"
        assert page.locator(".bp6-toast.bp6-intent-danger").count() == 0, page.locator(
            ".bp6-toast"
        ).all_inner_texts()

    def outside_requests(self):
        """``[(url, failure)]`` of this browser's requests to hosts other than loopback, in
        order; failure is None unless the request failed (so far)."""
        return [(r.url, r.failure) for r in self.requests if not is_loopback(r.url)]

    def sent_outside(self):
        """URLs of requests to non-loopback hosts that left the browser: all but those
        Chromium refused itself under the page's Content-Security-Policy (failure "csp": no
        DNS lookup, no connection)."""
        return [url for url, failure in self.outside_requests() if failure != "csp"]

    def screenshot(self, label=None, page=None):
        path = self.artifacts / f"{label or self.name}.png"
        (page or self.page).screenshot(path=str(path))
        return path
