"""A student's steps through a test Hub as the browser takes them: the spawn form, the spawn's
progress events, CARTA's file list over ICD 30; and the routes configurable-http-proxy holds."""

import asyncio
import json

import requests
from carta_standin import icd

from .client import connect, open_carta


def post_form(hub, session, name, form):
    """POST the spawn form as the browser does (with the Hub's XSRF cookie value)."""
    data = {**form, "_xsrf": session.cookies.get("_xsrf", path="/hub/")}
    return session.post(f"{hub.url}/hub/spawn/{name}", data=data, allow_redirects=False)


def read_progress(hub, name, until=lambda message: False):
    """The progress messages (server-sent events) of ``name``'s pending spawn until it ends
    or ``until(message)``."""
    url = f"{hub.url}/hub/api/users/{name}/server/progress"
    headers = {"Authorization": f"token {hub.api_token}"}
    messages = []
    with requests.get(url, headers=headers, stream=True, timeout=120) as r:
        assert r.status_code == 200, r.text
        for line in r.iter_lines(decode_unicode=True):
            if line and line.startswith("data:"):
                event = json.loads(line[5:])
                messages.append(event.get("message", ""))
                if event.get("ready") or event.get("failed") or until(messages[-1]):
                    return messages
    return messages


def proxy_routes(hub, token):
    """The routes configurable-http-proxy holds right now (asked through its own API; the
    Hub was started with ``CONFIGPROXY_AUTH_TOKEN=token``)."""
    r = requests.get(
        f"{hub.proxy_api}/api/routes", headers={"Authorization": f"token {token}"}, timeout=5
    )
    r.raise_for_status()
    return r.json()


async def handshake(ws):
    viewer = icd.messages.RegisterViewer(session_id=0, client_feature_flags=5)
    await ws.send(icd.encode_message(icd.EventType.REGISTER_VIEWER, 1, viewer))
    event, _, request_id, ack = icd.decode_message(await binary(ws))
    assert event == icd.EventType.REGISTER_VIEWER_ACK and request_id == 1
    assert ack.success, ack.message


async def file_list(ws, directory, request_id=2):
    request = icd.messages.FileListRequest(directory=directory)
    await ws.send(icd.encode_message(icd.EventType.FILE_LIST_REQUEST, request_id, request))
    while True:
        event, _, _, message = icd.decode_message(await binary(ws))
        if event == icd.EventType.FILE_LIST_RESPONSE:
            return message


async def binary(ws):
    while True:
        frame = await asyncio.wait_for(ws.recv(), 30)
        if isinstance(frame, bytes):
            return frame


async def listing(hub, session, name, directory):
    """Log in to ``name``'s CARTA as a browser does, then list ``directory`` over ICD 30."""
    await asyncio.to_thread(open_carta, hub, session, name)
    async with connect(hub, session, name) as ws:
        await handshake(ws)
        return await file_list(ws, directory)
