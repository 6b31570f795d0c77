"""A websocket test backend with carta_backend's command line, startup line and token rule,
for measuring what the wrapper does to frames (size, direction, speed) independently of
CARTA's protocol. Not CARTA: use carta-standin for anything CARTA-specific.

Binary frames up to 1 KiB are echoed (round trips); larger ones are counted. Text commands:
``stats`` -> bytes received since the last ``stats``; ``send SIZE COUNT`` -> COUNT binary
frames of SIZE bytes, then the text ``sent``.
"""

import argparse
import asyncio
import hmac
import os

import websockets

ECHO_LIMIT = 1024


def parse(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, required=True)
    args, _ = p.parse_known_args(argv)
    return args


async def serve_client(ws):
    received = 0
    async for message in ws:
        if isinstance(message, str):
            if message == "stats":
                await ws.send(str(received))
                received = 0
            elif message.startswith("send "):
                size, count = map(int, message.split()[1:])
                frame = os.urandom(size)
                for _ in range(count):
                    await ws.send(frame)
                await ws.send("sent")
        elif len(message) <= ECHO_LIMIT:
            await ws.send(message)
        else:
            received += len(message)


async def main():
    args = parse()
    token = os.environ["CARTA_AUTH_TOKEN"]

    def authorised(conn, request):
        sent = request.headers.get("carta-auth-token", "")
        if not hmac.compare_digest(sent, token):
            return conn.respond(403, "wrong token\n")

    async with websockets.serve(
        serve_client,
        args.host,
        args.port,
        max_size=300 * 2**20,
        compression=None,
        process_request=authorised,
    ):
        print(
            f"[echo] [CARTA] [info] Listening on port {args.port} (echo test backend)", flush=True
        )
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main())
