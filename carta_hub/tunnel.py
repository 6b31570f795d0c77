"""Byte-level websocket pass-through to the backend after an authenticated upgrade.

The browser and ``carta_backend`` negotiate the websocket (and permessage-deflate) with each
other; the wrapper only rewrites the upgrade request and then copies bytes. No per-message
decoding, so no size cap and little overhead.
"""

import asyncio

from .backend import LOOPBACK

WRITE_BUFFER = 4 << 20
# Headers never forwarded to the backend: the Hub's credentials, and hop-by-hop ones we set.
DROPPED = {"cookie", "authorization", "host", "x-xsrftoken"}


def upgrade_request(path, query, headers, port, token):
    """The upgrade request as the backend should see it."""
    target = path + ("?" + query if query else "")
    lines = [f"GET {target} HTTP/1.1", f"Host: {LOOPBACK}:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.get_all() if k.lower() not in DROPPED]
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

    def feed(self, data):
        pos, end = 0, len(data)
        while pos < end:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                continue
            part = data[pos:pos + self._header_len() - len(self._head)]
            self._head += part
            pos += len(part)
            if len(self._head) == self._header_len():
                self._frame()

    def _frame(self):
        head, self._head = self._head, b""
        opcode, size = head[0] & 0x0F, head[1] & 0x7F
        if size >= 126:
            n = 2 if size == 126 else 8
            size = int.from_bytes(head[2:2 + n], "big")
        self._skip = size
        if opcode in (1, 2):
            self._binary = opcode == 2
        if opcode == 2 or (opcode == 0 and self._binary):
            self.on_interaction()


class _Relay(asyncio.Protocol):
    """One side of the tunnel: bytes it receives are written to the other side at once."""

    def __init__(self, observe=None):
        self.observe = observe
        self.peer = None
        self.transport = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_BUFFER)

    def data_received(self, data):
        if self.observe:
            self.observe(data)
        self.peer.transport.write(data)

    def pause_writing(self):
        self.peer.transport.pause_reading()

    def resume_writing(self):
        self.peer.transport.resume_reading()

    def connection_lost(self, exc):
        if self.peer.transport:
            self.peer.transport.close()
        if not self.closed.done():
            self.closed.set_result(None)


async def tunnel(handler, port, token, path, on_interaction):
    """Connect ``handler``'s upgrade request to the backend on ``port`` and relay bytes."""
    loop = asyncio.get_running_loop()
    request = handler.request
    browser, backend = _Relay(ClientFrames(on_interaction).feed), _Relay()
    browser.peer, backend.peer = backend, browser
    await loop.create_connection(lambda: backend, LOOPBACK, port)
    backend.transport.pause_reading()
    backend.transport.write(upgrade_request(path, request.query, request.headers, port, token))
    stream = handler.detach()
    # The browser waits for the 101 before sending frames (RFC 6455 4.1), so nothing is
    # left in tornado's buffer: take the socket over.
    sock = stream.socket.dup()
    stream.close()
    await loop.connect_accepted_socket(lambda: browser, sock)
    if backend.closed.done():
        browser.transport.close()
    else:
        backend.transport.resume_reading()
    await asyncio.gather(browser.closed, backend.closed)
