"""``python -m k8s_simulator --port N --state-dir DIR --volume-root DIR``: run the simulator."""

import argparse
import asyncio
import logging
import signal

from aiohttp import web

from .api import Api, Store
from .kubelet import Kubelet

DEFAULT_PATH = "/opt/carta-hub/venv/bin:/usr/local/bin:/usr/bin:/bin"


async def serve(args):
    store = Store()
    kubelet = Kubelet(store, args.state_dir, args.volume_root, args.image_path)
    runner = web.AppRunner(Api(store, kubelet, args.kube_version).app(), shutdown_timeout=1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", args.port).start()
    logging.info("Kubernetes API simulator listening on http://127.0.0.1:%s", args.port)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await kubelet.shutdown()
    await runner.cleanup()


def main():
    parser = argparse.ArgumentParser(description="Kubernetes API simulator for tests")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state-dir", required=True, help="pod logs, specs and emptyDirs")
    parser.add_argument("--volume-root", required=True, help="PVC <name> is <volume-root>/<name>")
    parser.add_argument("--kube-version", default="1.30.0", help="schema pods are checked against")
    parser.add_argument("--image-path", default=DEFAULT_PATH, help="PATH inside 'images'")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s simulator %(message)s")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
