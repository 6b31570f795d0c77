"""Byte-level websocket pass-through to the backend after an authenticated upgrade.

The browser and ``carta_backend`` negotiate the websocket (and permessage-deflate) with each
other; the wrapper only rewrites the upgrade request and then copies bytes. No per-message
decoding, so no size cap and little overhead.
"""

import asyncio
import concurrent.futures
import mmap
import re
import socket
import threading
from collections.abc import Callable

from tornado import iostream
from tornado.httputil import HTTPHeaders

from carta_hub.backend import LOOPBACK

CHUNK = 1 << 20  # bytes per recv: larger reads, fewer system calls per byte
# The only headers forwarded with the upgrade: what the handshake needs and carta_backend
# reads (uWebSockets v20.46.0 src/App.h TemplatedApp::ws: sec-websocket-key, -protocol,
# -extensions, user-agent for its broken-compression check; carta-backend
# src/Session/SessionManager.cc OnUpgrade: x-forwarded-for). uWebSockets refuses a request
# head over 4 KiB (src/HttpParser.h MAX_FALLBACK_SIZE): the Hub's cookies or a Referer
# holding a long deep link would exceed it.
FORWARDED = {
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
    "user-agent",
    "x-forwarded-for",
}
# What may stand in the backend's request line: visible ASCII. The path comes URL-decoded (a
# %0d%0a in the browser's URL is a CR LF here) and would otherwise inject headers.
TARGET = re.compile(r"[!-~]+")


def request_target(path: str, query: str) -> str | None:
    """``path?query`` for the backend's request line; None if it holds a space, a control
    or a non-ASCII character."""
    target = path + ("?" + query if query else "")
    return target if TARGET.fullmatch(target) else None


def upgrade_request(target: str, headers: HTTPHeaders, port: int, token: str) -> bytes:
    """The upgrade request as the backend should see it (``target``: from
    :func:`request_target`)."""
    lines = [f"GET {target} HTTP/1.1", f"Host: {LOOPBACK}:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.get_all() if k.lower() in FORWARDED]
    lines.append(f"carta-auth-token: {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class ClientFrames:
    """Follows the browser-to-backend websocket frames; binary frames are interaction.

    CARTA's only text message from the frontend is its 5-second ``PING``: text and control
    frames are heartbeats, not activity.
    """

    def __init__(self, on_interaction):
        self.on_interaction = on_interaction
        self._head = b""
        self._skip = 0
        self._binary = False

    def _header_len(self):
        if len(self._head) < 2:
            return 2
        size = self._head[1] & 0x7F
        return 2 + {126: 2, 127: 8}.get(size, 0) + (4 if self._head[1] & 0x80 else 0)

    def feed(self, data: bytes | memoryview) -> None:
        pos, end = 0, len(data)
        while pos < end:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                continue
            part = data[pos : pos + self._header_len() - len(self._head)]
            self._head += part
            pos += len(part)
            if len(self._head) == self._header_len():
                self._frame()

    def _frame(self):
        head, self._head = self._head, b""
        opcode, size = head[0] & 0x0F, head[1] & 0x7F
        if size >= 126:
            n = 2 if size == 126 else 8
            size = int.from_bytes(head[2 : 2 + n], "big")
        self._skip = size
        if opcode in (1, 2):
            self._binary = opcode == 2
        if opcode == 2 or (opcode == 0 and self._binary):
            self.on_interaction()


def _pump(src, dst, observe):
    """Copy ``src`` to ``dst`` until either ends, then end both.

    A blocking thread per direction: no event loop round per chunk, and the anonymous mmap
    buffer holds in memory only the pages large messages have used.
    """
    view = memoryview(mmap.mmap(-1, CHUNK))
    try:
        while n := src.recv_into(view):
            if observe:
                observe(view[:n])
            dst.sendall(view[:n])
    except OSError:
        pass
    finally:
        _end(src, dst)


def _end(*socks):
    """Shut both sockets down, which also wakes a thread blocked on either."""
    for sock in socks:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _in_thread(*args):
    """Run :func:`_pump` in a daemon thread (a blocked one must not hold up the server's
    exit); the awaitable is done when it returns."""
    done = concurrent.futures.Future()

    def run():
        try:
            _pump(*args)
        finally:
            done.set_result(None)

    threading.Thread(target=run, name="carta-tunnel", daemon=True).start()
    return asyncio.wrap_future(done)


async def _relay_sockets(stream, backend, observe):
    """Relay with a blocking thread per direction on the two sockets themselves."""
    # The browser waits for the 101 before sending frames (RFC 6455 4.1), so nothing is
    # left in tornado's buffer: take the socket over.
    with stream.socket.dup() as browser:
        stream.close()
        for sock in (browser, backend):
            sock.setblocking(True)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await asyncio.gather(
                _in_thread(browser, backend, observe), _in_thread(backend, browser, None)
            )
        finally:
            _end(browser, backend)


async def _relay_streams(stream, backend, observe):
    """Relay on the event loop through tornado's streams: for a server that speaks TLS itself
    (JupyterHub's internal_ssl, a Jupyter Server's certfile), whose socket carries ciphertext."""
    backend = iostream.IOStream(backend)
    await asyncio.gather(_copy(stream, backend, observe), _copy(backend, stream, None))


async def _copy(src, dst, observe):
    """Copy tornado stream ``src`` to ``dst`` until either ends, then close both."""
    try:
        while True:
            data = await src.read_bytes(CHUNK, partial=True)
            if observe:
                observe(data)
            await dst.write(data)
    except iostream.StreamClosedError:
        pass
    finally:
        src.close()
        dst.close()


async def tunnel(
    handler, port: int, token: str, target: str, on_interaction: Callable[[], object]
) -> None:
    """Connect ``handler``'s upgrade request to the backend on ``port`` and relay bytes.

    ``on_interaction`` is called from the browser-to-backend thread (or, over TLS, the event
    loop): keep it to assignments.
    """
    loop = asyncio.get_running_loop()
    request = handler.request
    with socket.socket() as backend:
        backend.setblocking(False)
        await loop.sock_connect(backend, (LOOPBACK, port))
        await loop.sock_sendall(backend, upgrade_request(target, request.headers, port, token))
        stream = handler.detach()
        relay = _relay_streams if isinstance(stream, iostream.SSLIOStream) else _relay_sockets
        await relay(stream, backend, ClientFrames(on_interaction).feed)
