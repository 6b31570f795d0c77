"""One websocket client (a CARTA session) speaking ICD 30, like carta_backend's Session.

Implemented: REGISTER_VIEWER, FILE_LIST_REQUEST, REGION_LIST_REQUEST (real folder listings),
the text PING/PONG keep-alive with --idle_timeout, the scripting round trip (SCRIPTING_REQUEST
to the frontend, its SCRIPTING_RESPONSE back to the HTTP request), and honest failures for
what needs image data (OPEN_FILE, FILE_INFO_REQUEST, RESUME_SESSION with images). Other known
events get an ERROR_DATA saying the stand-in does not support them; unknown event types are
logged and ignored, as carta_backend does.
"""

import asyncio
import os
import platform
import time

from google.protobuf.message import DecodeError
from tornado.ioloop import IOLoop
from tornado.websocket import WebSocketClosedError, WebSocketHandler

from carta_standin import icd, log
from carta_standin.auth import authorised
from carta_standin.files import fill_listing
from carta_standin.icd import EventType

NOT_CARTA = "carta-standin is a stand-in for testing, not CARTA: it cannot read images."
READ_ONLY, SCRIPTING = 8, 64  # CARTA.ServerFeatureFlags


def platform_strings(controller_deployment=False):
    """RegisterViewerAck.platform_strings as carta_backend fills them."""
    try:
        release = platform.freedesktop_os_release().get("PRETTY_NAME", "unknown")
    except OSError:
        release = "unknown"
    strings = {
        "release_info": release,
        "deployment": "carta-standin",
        "architecture": platform.machine(),
        "platform": "macOS" if platform.system() == "Darwin" else "Linux",
    }
    if controller_deployment:
        strings["controller_deployment"] = "true"
    if os.environ.get("CARTA_DOCKER_DEPLOYMENT"):
        strings["docker_deployment"] = "true"
    return strings


class SessionHandler(WebSocketHandler):
    """Accepts the upgrade on any path once the token checks out (else drops the connection)."""

    def initialize(self, ctx):
        self.ctx = ctx
        self.session_id = 0
        self.key = 0  # the id SessionManager keeps the session under (scripting finds it so)
        self.scripting = {}  # scripting_request_id -> Future of the frontend's response
        self.last_message = time.monotonic()

    def check_origin(self, origin):
        return True  # carta_backend does not look at Origin

    def get_compression_options(self):
        return {}  # offer permessage-deflate

    async def get(self, *args, **kwargs):
        if not authorised(self.request, self.ctx.token):
            log.error("Incorrect or missing auth token supplied! Closing WebSocket connection")
            self.detach().close()
            return
        await super().get(*args, **kwargs)

    def open(self, *args, **kwargs):
        self.session_id = (time.time_ns() // 1000) & 0xFFFFFFFF or 1
        self.address = self.request.headers.get("X-Forwarded-For") or self.request.remote_ip
        # SessionManager::OnConnect (src/Session/SessionManager.cc): _sessions[session_id]
        self.key = self.session_id
        self.ctx.sessions[self.key] = self
        self.ctx.lifecycle.connected()
        log.info(
            f"Session {self.session_id} [{self.address}] Connected. "
            f"Num sessions: {self.ctx.lifecycle.sessions}"
        )

    def on_close(self):
        log.info(
            f"Session {self.session_id} [{self.address}] Deleted. "
            f"Remaining sessions: {self.ctx.lifecycle.sessions - 1}"
        )
        self.ctx.sessions.pop(self.key, None)
        self.close_scripting_requests()
        self.ctx.lifecycle.disconnected()

    async def on_message(self, message):
        if isinstance(message, str):
            if message == "PING":
                self.on_ping_text()
            return
        if len(message) < icd.HEADER.size:
            return
        self.last_message = time.monotonic()
        event_type, icd_version, request_id, payload = icd.decode_header(message)
        if not isinstance(event_type, EventType):
            log.warning(f"Bad event type {event_type}!")
            return
        handler = self.HANDLERS.get(event_type)
        try:
            if handler:
                await handler(self, icd_version, request_id, payload)
            else:
                self.unsupported(event_type, request_id)
        except DecodeError:
            log.warning(f"Bad {event_type.name} message!")

    def on_ping_text(self):
        idle = int(time.monotonic() - self.last_message)
        if 0 < self.ctx.idle_timeout <= idle:
            log.warning(
                f"Client {self.session_id} has been idle for {idle} seconds. Disconnecting.."
            )
            self.ws_connection.stream.close()  # no close frame, like uWS's close()
        else:
            self.write_message("PONG")

    def send(self, event_type, request_id, msg):
        try:
            self.write_message(icd.encode_message(event_type, request_id, msg), binary=True)
        except WebSocketClosedError:
            log.debug(f"Session {self.session_id} closed before {event_type.name} was sent")

    # Handlers: (icd_version, request_id, payload)

    async def register_viewer(self, icd_version, request_id, payload):
        request = icd.messages.RegisterViewer.FromString(payload)
        ack = icd.messages.RegisterViewerAck(
            session_id=request.session_id, success=True, session_type=icd.SessionType.NEW
        )
        if icd_version != icd.ICD_VERSION:
            ack.success = False
            ack.message = (
                f"Invalid ICD version number. Expected {icd.ICD_VERSION}, got {icd_version}"
            )
        elif not request.session_id:
            ack.session_id = self.session_id
            ack.message = f"Start a new frontend and assign it with session id {self.session_id}"
        else:
            ack.session_type = icd.SessionType.RESUMED
            if request.session_id != self.session_id:
                # the id changes, the key in SessionManager's map does not
                pointer = f"{id(self):#x}"
                log.info(
                    f"({pointer}) Session setting id to {request.session_id} "
                    f"(was {self.session_id}) on resume"
                )
                self.session_id = request.session_id
                log.info(f"({pointer}) Session setting id to {self.session_id}")
                ack.message = f"Start a new backend and assign it with session id {self.session_id}"
            else:
                ack.message = f"Network reconnected with session id {self.session_id}"
        ack.server_feature_flags = (READ_ONLY if self.ctx.read_only else 0) | (
            SCRIPTING if self.ctx.enable_scripting else 0
        )
        ack.platform_strings.update(self.ctx.platform_strings)
        self.send(EventType.REGISTER_VIEWER_ACK, request_id, ack)

    async def file_list(self, icd_version, request_id, payload, regions=False):
        request = icd.messages.FileListRequest.FromString(payload)
        reply, reply_type = (
            (icd.messages.RegionListResponse(), EventType.REGION_LIST_RESPONSE)
            if regions
            else (icd.messages.FileListResponse(), EventType.FILE_LIST_RESPONSE)
        )
        await IOLoop.current().run_in_executor(
            None,
            fill_listing,
            reply,
            self.ctx.top_level_folder,
            self.ctx.starting_folder,
            request.directory,
            request.filter_mode,
            regions,
        )
        self.send(reply_type, request_id, reply)

    async def region_list(self, icd_version, request_id, payload):
        await self.file_list(icd_version, request_id, payload, regions=True)

    async def stop_file_list(self, icd_version, request_id, payload):
        icd.messages.StopFileList.FromString(payload)  # listings finish quickly; nothing to stop

    async def file_info(self, icd_version, request_id, payload):
        icd.messages.FileInfoRequest.FromString(payload)
        self.send(
            EventType.FILE_INFO_RESPONSE,
            request_id,
            icd.messages.FileInfoResponse(success=False, message=NOT_CARTA),
        )

    async def open_file(self, icd_version, request_id, payload):
        request = icd.messages.OpenFile.FromString(payload)
        # recorded for tests: which image the frontend asked for (folder relative to the top)
        log.info(
            f"OPEN_FILE directory={request.directory!r} file={request.file!r} "
            f"hdu={request.hdu!r} file_id={request.file_id}"
        )
        log.warning(f"Cannot open {request.directory}/{request.file}: {NOT_CARTA}")
        self.send(
            EventType.OPEN_FILE_ACK,
            request_id,
            icd.messages.OpenFileAck(success=False, file_id=request.file_id, message=NOT_CARTA),
        )

    async def resume_session(self, icd_version, request_id, payload):
        # An empty ResumeSession (no images, no catalogs) is trivially resumed.
        ack = icd.messages.ResumeSessionAck(success=not payload)
        if payload:
            ack.message = NOT_CARTA
        self.send(EventType.RESUME_SESSION_ACK, request_id, ack)

    # Scripting, as src/Session/Session.cc: SendScriptingRequest, OnScriptingResponse,
    # OnScriptingAbort, CloseAllScriptingRequests

    def send_scripting_request(self, request) -> asyncio.Future:
        """Send ``request`` (a ScriptingRequest) to the frontend as SCRIPTING_REQUEST (ICD
        request id 0); the future gets its ScriptingResponse, or None if the session closes."""
        answer = asyncio.get_running_loop().create_future()
        self.send(EventType.SCRIPTING_REQUEST, 0, request)
        self.scripting[request.scripting_request_id] = answer
        return answer

    async def scripting_response(self, icd_version, request_id, payload):
        response = icd.messages.ScriptingResponse.FromString(payload)
        answer = self.scripting.pop(response.scripting_request_id, None)
        if answer is None:
            log.warning(
                "Could not find callback for scripting response with request ID "
                f"{response.scripting_request_id}."
            )
        elif not answer.done():
            answer.set_result(response)

    def abort_scripting(self, scripting_request_id):
        """The HTTP client went away: forget its request."""
        answer = self.scripting.pop(scripting_request_id, None)
        if answer is not None:
            answer.cancel()

    def close_scripting_requests(self):
        for answer in self.scripting.values():
            if not answer.done():
                answer.set_result(None)
        self.scripting.clear()

    def unsupported(self, event_type, request_id):
        log.warning(f"{event_type.name} is not supported by carta-standin")
        self.send(
            EventType.ERROR_DATA,
            request_id,
            icd.messages.ErrorData(
                severity=icd.ErrorSeverity.ERROR,
                tags=["carta-standin"],
                message=f"{event_type.name}: {NOT_CARTA}",
            ),
        )

    HANDLERS = {
        EventType.REGISTER_VIEWER: register_viewer,
        EventType.FILE_LIST_REQUEST: file_list,
        EventType.REGION_LIST_REQUEST: region_list,
        EventType.STOP_FILE_LIST: stop_file_list,
        EventType.FILE_INFO_REQUEST: file_info,
        EventType.OPEN_FILE: open_file,
        EventType.RESUME_SESSION: resume_session,
        EventType.SCRIPTING_RESPONSE: scripting_response,
    }
