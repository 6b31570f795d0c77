"""A per-session place for the backend's ~/.carta when the student's cannot be written.

carta_backend uses HOME for nothing but ``~/.carta`` (src/Main/ProgramSettings.cc,
ApplyJSONSettings: ``user_directory``; the HTTP server's ``config/`` and the logger's
``log/`` are under it). When it cannot write there it does not say so: its
WritePreferencesFile and WriteObjectFile (src/HttpServer/HttpServer.cc) answer 500 when the
folder cannot be created, but 200 when the file cannot be opened or written (std::ofstream
fails silently: nothing is kept, or on a full disk the file is left empty), and
GetExistingPreferences lets a filesystem error other than "not found" (a ~/.carta it cannot
enter) escape, which ends the backend (std::terminate). The 6.0 frontend saves a preference
on the first file open. So the wrapper gives such a backend a private temporary HOME (with a
copy of the student's saved config, when readable) and the page tells the student that
changes are kept for this session only.
"""

import atexit
import errno
import gzip
import os
import re
import shutil
import tempfile

NOTICE = (
    '<div id="carta-hub-notice" role="status" style="position:fixed;left:50%;bottom:8px;'
    "transform:translateX(-50%);z-index:2147483647;max-width:40em;padding:4px 12px;"
    "border:1px solid #d9b54a;border-radius:4px;background:#fff8e1;color:#4d3b00;"
    "font:13px/1.4 sans-serif;pointer-events:none;animation:carta-hub-notice 0.5s 30s forwards"
    '">Your home folder is {problem}: CARTA keeps changes to preferences, layouts and '
    "snippets for this session only.</div>"
    "<style>@keyframes carta-hub-notice{{to{{opacity:0;visibility:hidden}}}}</style>"
)
BODY = re.compile(rb"<body[^>]*>", re.IGNORECASE)


def carta_folder_problem(home: str) -> str | None:
    """ "not writable" or "full" when the backend could not keep files in ``home``/.carta/config,
    else None. Tried by writing a file into the deepest of these folders that exists (none is
    created)."""
    config = os.path.join(home, ".carta", "config")
    folder = config
    while folder != home and not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    try:
        fd, probe = tempfile.mkstemp(prefix=".carta-hub-probe-", dir=folder)
        try:
            os.write(fd, b"{}\n")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
        preferences = os.path.join(config, "preferences.json")
        if os.path.lexists(preferences) and not os.access(preferences, os.W_OK):
            return "not writable"
    except OSError as e:
        return "full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else "not writable"
    return None


def make_session_home(home: str) -> str:
    """A new private (0700, unpredictable) folder to be the backend's HOME, holding a copy of
    ``home``/.carta/config when it can be read; removed when this process exits."""
    folder = tempfile.mkdtemp(prefix="carta-hub-session-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    config = os.path.join(folder, ".carta", "config")
    try:
        shutil.copytree(
            os.path.join(home, ".carta", "config"), config, copy_function=shutil.copyfile
        )
    except (OSError, shutil.Error):
        pass  # nothing saved yet, or unreadable: CARTA's defaults
    for parent, _, files in os.walk(config):  # copytree kept the folders' read-only modes
        os.chmod(parent, 0o700)
        for name in files:
            os.chmod(os.path.join(parent, name), 0o600)
    return folder


def add_notice(response, path: str, problem: str | None) -> None:
    """Put the session-only notice into CARTA's start page (a jupyter-server-proxy
    rewrite_response step). It lets clicks through and fades after 30 s, so it covers none of
    CARTA's controls; plain HTML and CSS, no script."""
    if not problem or path not in ("/", "/index.html") or response.code != 200:
        return
    body = response.body
    if response.headers.get("Content-Encoding") == "gzip":  # a packaged index.html.gz
        body = gzip.decompress(body)
        del response.headers["Content-Encoding"]
    notice = NOTICE.format(problem=problem).encode()
    response.body = BODY.sub(lambda m: m.group(0) + notice, body, count=1)
