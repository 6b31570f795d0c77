"""Scripting CARTA from a notebook (issue 20): carta-python's requests, with the student's
JupyterHub token, reach the CARTA tab the student has open and bring the frontend's answer back.

carta-python is not on the package index here: helpers/carta_python/carta is its client
side, line for line (carta/protocol.py, ``Protocol.request_scripting_action``: ``POST
<frontend URL>/api/scripting/action`` with ``Authorization: Bearer <token>`` and the JSON body
``{"session_id", "path", "action", "parameters", "async"[, "return_path"]}``), and runs the
student guide's notebook example unchanged; :func:`call_action` sends the same request and
keeps the raw answer. The frontend is the real carta-frontend 6.0.0 in Chromium, behind a real
Hub; the backend is carta-standin (NOT CARTA), which passes actions to the frontend as
carta_backend does.
"""

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import requests
import websockets
from carta_standin import icd
from carta_standin.icd import EventType
from helpers.browser import Student, browser  # noqa: F401  (fixture)
from helpers.carta import register
from helpers.hub import SAME_USER_CARTA, VENV_BIN
from helpers.jupyter import start_jupyter
from helpers.procs import every_process
from helpers.standin import FRONTEND, running_standin
from playwright.sync_api import expect

CARTA_PYTHON = Path(__file__).parent / "helpers" / "carta_python"
EXAMPLE = Path(__file__).parent.parent / "docs" / "examples" / "notebook-scripting.py"

FITS = b"SIMPLE  =                    T" + b" " * 2850
LAB, CARTA_ONLY, OTHER = "lab.scripter", "carta.scripter", "other"
CONFIG = (
    SAME_USER_CARTA
    + """
c.CartaBackend.enable_scripting = True
c.CartaBackend.top_level_folder = "{home}"
c.CartaBackend.offline = True
c.CartaBackend.idle_timeout = 3600

def carta_mode(spawner):
    spawner.carta_mode = "lab" if spawner.user.name.startswith("lab") else "carta"

c.Spawner.pre_spawn_hook = carta_mode
"""
)


# --- a client speaking carta-python's protocol ---


def macro(target, variable):
    """carta.util.Macro as CartaEncoder serialises it."""
    return {"macroTarget": target, "macroVariable": variable}


def call_action(url, token, session_id, path, *args, **kwargs):
    """carta.protocol.Protocol.request_scripting_action: the response of the POST."""
    target, action = ".".join(path.split(".")[:-1]), path.split(".")[-1]
    body = {
        "session_id": session_id,
        "path": target,
        "action": action,
        "parameters": args,
        "async": kwargs.get("async", False),
    }
    if "return_path" in kwargs:
        body["return_path"] = kwargs["return_path"]
    return requests.post(
        url.split("?")[0].rstrip("/") + "/api/scripting/action",
        data=json.dumps(body),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        timeout=kwargs.get("timeout", 30),
    )


def ls(url, token, session_id, folder):
    """The listing of ``folder``: getFileList, then get_value of the listing, as carta-python's
    Session.ls does."""
    listed = call_action(url, token, session_id, "fileBrowserStore.getFileList", folder)
    assert listed.status_code == 200, listed.text
    assert listed.json() == {"success": True}  # the action returns nothing
    fetched = call_action(
        url, token, session_id, "fetchParameter", macro("fileBrowserStore", "fileList")
    )
    assert fetched.status_code == 200, fetched.text
    answer = fetched.json()
    assert answer["success"], answer
    return answer["response"]


def run_in_notebook(environ, code, *args):
    """``code`` run as a notebook cell of that environment runs it (carta-python installed)."""
    done = subprocess.run(
        [str(VENV_BIN / "python"), "-c", code, *args],
        env={**environ, "PYTHONPATH": str(CARTA_PYTHON)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode:
        raise RuntimeError(done.stderr.strip().splitlines()[-1])
    return done.stdout


# --- the stand-in's round trip, as carta_backend's ---


def post(backend, body, token=None):
    return requests.post(
        backend.url("/api/scripting/action"),
        data=body if isinstance(body, bytes) else json.dumps(body),
        headers={"Authorization": f"Bearer {token or backend.token}"},
        timeout=10,
    )


async def test_standin_passes_actions_to_the_session_and_answers_as_carta_backend(tmp_path):
    """HttpServer::HandleScriptingAction: 403 without the token, 400 for a body it cannot
    read, 404 for an unknown session or one that closes before it answers; the frontend's
    SCRIPTING_RESPONSE comes back as {"success", "message"?, "response"?} (nlohmann's dump)."""
    with running_standin(tmp_path / "home", "--enable_scripting", str(tmp_path)) as backend:
        async with websockets.connect(backend.ws_url(), max_size=None) as ws:
            ack = (await register(ws))[3]
            assert ack.server_feature_flags & 64  # SCRIPTING
            sid = ack.session_id
            backend.wait_for_line(rf"Session {sid} \[.*\] Connected\.")
            action = {
                "session_id": sid,
                "path": "fileBrowserStore",
                "action": "getFileList",
                "parameters": [{"b": 1, "a": "é"}],
                "async": False,
                "return_path": "files",
            }
            answer = asyncio.ensure_future(asyncio.to_thread(post, backend, action))
            event, _, request_id, request = icd.decode_message(
                await asyncio.wait_for(ws.recv(), 10)
            )
            assert (event, request_id) == (EventType.SCRIPTING_REQUEST, 0)
            assert (request.target, request.action, request.return_path) == (
                "fileBrowserStore",
                "getFileList",
                "files",
            )
            assert request.parameters == '[{"a":"é","b":1}]'
            assert getattr(request, "async") is False
            response = icd.messages.ScriptingResponse(
                scripting_request_id=request.scripting_request_id,
                success=True,
                response='{"z": [1, 2], "a": null}',
            )
            await ws.send(icd.encode_message(EventType.SCRIPTING_RESPONSE, 0, response))
            reply = await answer
            assert reply.status_code == 200
            assert reply.content == b'{"response":{"a":null,"z":[1,2]},"success":true}'

            # a failure's message comes back; the session closing answers 404
            answer = asyncio.ensure_future(asyncio.to_thread(post, backend, action))
            request = icd.decode_message(await asyncio.wait_for(ws.recv(), 10))[3]
            failed = icd.messages.ScriptingResponse(
                scripting_request_id=request.scripting_request_id, message="Missing target"
            )
            await ws.send(icd.encode_message(EventType.SCRIPTING_RESPONSE, 0, failed))
            assert (await answer).json() == {"message": "Missing target", "success": False}
            answer = asyncio.ensure_future(asyncio.to_thread(post, backend, action))
            await asyncio.wait_for(ws.recv(), 10)
        assert (await answer).status_code == 404
        assert post(backend, action).status_code == 404  # no such session now
        assert post(backend, action, token="wrong").status_code == 403
        assert post(backend, b"{not json").status_code == 400
        assert post(backend, {**action, "async": "no"}).status_code == 400


# --- through a real Hub, with the real frontend ---


@pytest.fixture(scope="module")
def hub(hub_factory, hub_unix_user):
    """One Hub: lab.* users get JupyterLab with the CARTA tile, the others CARTA-only."""
    hub = hub_factory(CONFIG)
    for name in (LAB, CARTA_ONLY, OTHER):
        (hub.workdir / "homes" / name / "obs").mkdir(parents=True)
        (hub.workdir / "homes" / name / "obs" / f"{name}-m51.fits").write_bytes(FITS)
    subprocess.run(["chown", "-R", hub_unix_user.pw_name, str(hub.workdir / "homes")], check=True)
    return hub


def notebook_environment(name):
    """The environment a notebook kernel of ``name``'s JupyterLab inherits: its server's."""
    for _, argv, environ, _ in every_process():
        if environ.get(b"JUPYTERHUB_USER") == name.encode() and any(
            arg.endswith(b"jupyterhub-singleuser") for arg in argv[:2]
        ):
            return {k.decode(): v.decode() for k, v in environ.items()}
    raise AssertionError(f"no jupyterhub-singleuser of {name}")


def run_helper(environ, **kwargs):
    """carta_hub.scripting.carta_session() run as a notebook cell runs it."""
    code = (
        "import json, sys\nfrom carta_hub.scripting import carta_session\n"
        "print(json.dumps(carta_session(**json.loads(sys.argv[1]))))"
    )
    return json.loads(run_in_notebook(environ, code, json.dumps(kwargs)))


def token_page_token(student, hub):
    """A token from the Hub's token page, as the student requests it there."""
    page = student.context.new_page()
    page.goto(f"{hub.url}/hub/token")
    page.click('#request-token-form [type="submit"]')
    page.wait_for_selector("#token-result:not(:empty)")
    token = page.inner_text("#token-result").strip()
    page.close()
    return token


def sessions(hub, name, token):
    r = requests.get(
        hub.user_url(name, "carta-hub/sessions"),
        headers={"Authorization": f"token {token}"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    return r.json()


def wait_sessions(hub, name, token, ids, timeout=30):
    deadline = time.monotonic() + timeout
    while [s["session_id"] for s in sessions(hub, name, token)["sessions"]] != ids:
        assert time.monotonic() < deadline, sessions(hub, name, token)
        time.sleep(0.2)


def refused_with_cookies(student, page, url, session_id):
    """A page of the same Hub (same origin: another student's server is one too) and another
    site post an action with the student's cookies only: both refused."""
    body = json.dumps(
        {"session_id": session_id, "path": "", "action": "fetchParameter", "parameters": []}
    )
    same_origin = page.evaluate(
        """async ([url, body]) => {
            const r = await fetch(url, {method: "POST", body,
                                        headers: {"Content-Type": "application/json"}});
            return [r.status, await r.text()];
        }""",
        [url, body],
    )
    assert same_origin[0] == 403, same_origin
    assert "_xsrf" in same_origin[1]
    cross_site = student.context.request.post(
        url,
        data=body,
        headers={"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
    )
    assert cross_site.status == 403
    assert "refuses changes sent by another site" in cross_site.text()


def test_notebook_scripts_the_open_carta_tab_in_jupyterlab(browser, hub, artifacts):  # noqa: F811
    """In JupyterLab, a notebook's carta_session() finds the CARTA tab the student opened;
    carta-python's requests with the notebook's $JUPYTERHUB_API_TOKEN list a folder in it
    (the File Browser shows it); another user's token, cookie-only posts from a page of the
    Hub or of another site are refused; closing the tab ends the session."""
    with Student(browser, artifacts, "scripting-lab", timeout=90) as student:
        student.login(hub.url, LAB, hub.password)
        lab = student.page
        lab.wait_for_url(hub.user_url(LAB, "lab") + "**")
        carta = student.context.new_page()
        carta.goto(hub.user_url(LAB, "carta/"))
        frontend_id = int(student.wait_connected(carta))
        # the session's clock (issue 21) in JupyterLab's CARTA tab too
        expect(carta.locator("#carta-hub-clock")).to_have_text("1 h left", timeout=10000)

        notebook = notebook_environment(LAB)
        url, session_id, token = run_helper(notebook)
        assert url.endswith(f"/user/{LAB}/carta/") and session_id == frontend_id
        assert token == notebook["JUPYTERHUB_API_TOKEN"]

        # the student guide's example, as a notebook cell
        printed = run_in_notebook(notebook, EXAMPLE.read_text())
        assert printed.strip() == repr([f"{LAB}-m51.fits"])
        assert student.files(f"{LAB}-m51.fits", page=carta)  # the student sees it
        assert student.folder(carta) == ["obs"]
        student.screenshot("student-scripting", page=carta)

        # the same through the Hub's proxy, as from the student's own machine
        public = hub.user_url(LAB, "carta/")
        assert ls(public, token, session_id, "")["files"] == []

        other = Student(browser, artifacts, "scripting-other")
        with other:
            other.login(hub.url, OTHER, hub.password)
            others_token = token_page_token(other, hub)
        refused = call_action(public, others_token, session_id, "fetchParameter", "x")
        assert refused.status_code == 403
        assert (
            requests.get(
                hub.user_url(LAB, "carta-hub/sessions"),
                headers={"Authorization": f"token {others_token}"},
                timeout=10,
            ).status_code
            == 403
        )

        refused_with_cookies(student, lab, public + "api/scripting/action", session_id)

        assert [s["session_id"] for s in sessions(hub, LAB, token)["sessions"]] == [session_id]
        carta.close()
        wait_sessions(hub, LAB, token, [])
        gone = call_action(public, token, session_id, "fetchParameter", "x")
        assert gone.status_code == 404
        with pytest.raises(RuntimeError, match="No CARTA tab is open"):
            run_helper(notebook)


def test_token_page_token_scripts_carta_only_server(browser, hub, artifacts):  # noqa: F811
    """CARTA-only: with a token from the Hub's token page, carta_session() on the student's
    server URL and carta-python's requests through the Hub reach the open CARTA."""
    with Student(browser, artifacts, "scripting-carta-only", timeout=90) as student:
        student.login(hub.url, CARTA_ONLY, hub.password)
        student.page.wait_for_url(hub.user_url(CARTA_ONLY) + "**")
        frontend_id = int(student.wait_connected())
        token = token_page_token(student, hub)

        environ = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")}
        server = hub.user_url(CARTA_ONLY)
        url, session_id, given = run_helper(environ, server_url=server, token=token)
        assert (url, session_id, given) == (server, frontend_id, token)
        listing = ls(url, token, session_id, "obs")
        assert [f["name"] for f in listing["files"]] == [f"{CARTA_ONLY}-m51.fits"]
        assert student.folder() == ["obs"]
        refused_with_cookies(student, student.page, url + "api/scripting/action", session_id)


def test_scripting_off_says_so(open_tmp, hub_unix_user):
    """Without c.CartaBackend.enable_scripting, a script learns why and what to change."""
    home = open_tmp / "scripting-off"
    home.mkdir()
    subprocess.run(["chown", hub_unix_user.pw_name, str(home)], check=True)
    server = start_jupyter(
        home,
        "/user/scripting-off/",
        user=hub_unix_user.pw_name,
        args=[
            f"--CartaBackend.executable={VENV_BIN / 'carta-standin'}",
            f"--CartaBackend.frontend_folder={FRONTEND}",
        ],
    )
    try:
        r = call_action(f"{server.url}carta/", server.token, 1, "fetchParameter", "x")
        assert r.status_code == 501  # what carta-python reports as "Scripting is not enabled"
        assert "c.CartaBackend.enable_scripting = True" in r.json()["message"]
        assert "Starting CARTA backend" not in server.log()  # the wrapper answered
    finally:
        server.stop()
