"""Speak ICD 30 to a CARTA backend (or through the wrapper) like the frontend does."""

import asyncio

from carta_standin import icd
from carta_standin.icd import EventType


async def request(ws, event_type, message, request_id=1, icd_version=icd.ICD_VERSION):
    """Send one ICD message and return the decoded reply
    ``(event_type, icd_version, request_id, message)``."""
    await ws.send(icd.encode_message(event_type, request_id, message, icd_version))
    return icd.decode_message(await asyncio.wait_for(ws.recv(), 10))


def register(ws, icd_version=icd.ICD_VERSION):
    """REGISTER_VIEWER as the frontend sends it (session 0, flags 5, request 1)."""
    return request(
        ws,
        EventType.REGISTER_VIEWER,
        icd.messages.RegisterViewer(client_feature_flags=5),
        1,
        icd_version,
    )


def file_list(ws, directory="$BASE", request_id=2):
    return request(
        ws,
        EventType.FILE_LIST_REQUEST,
        icd.messages.FileListRequest(directory=directory),
        request_id,
    )
