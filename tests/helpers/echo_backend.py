"""A minimal websocket echo server with carta_backend's command line, startup line and token
rule, for testing what the wrapper does to frames (size, direction, speed) independently of
CARTA's protocol. Not CARTA: use carta-standin for anything CARTA-specific."""

import argparse
import asyncio
import hmac
import os

import websockets


def parse(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, required=True)
    args, _ = p.parse_known_args(argv)
    return args


async def main():
    args = parse()
    token = os.environ["CARTA_AUTH_TOKEN"]

    def authorised(conn, request):
        sent = request.headers.get("carta-auth-token", "")
        if not hmac.compare_digest(sent, token):
            return conn.respond(403, "wrong token\n")

    async def echo(ws):
        async for message in ws:
            await ws.send(message)

    async with websockets.serve(echo, args.host, args.port, max_size=300 * 2**20,
                                compression=None, process_request=authorised):
        print(f"[echo] [CARTA] [info] Listening on port {args.port} (echo test backend)",
              flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main())
