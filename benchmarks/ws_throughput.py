"""Websocket throughput and round trip along the path a student's CARTA traffic takes.

Paths, all measured in the same run against the same test backend (tests/helpers/
echo_backend.py, not CARTA):
  direct        client -> backend
  chp           client -> configurable-http-proxy -> backend
  hub-chp       client -> the Hub's CHP -> backend                    (carta-only's baseline)
  carta-only    client -> the Hub's CHP -> carta-hub-singleuser -> backend (a real Hub + login)
  lab-chp       client -> the JupyterLab paths' CHP -> backend        (their baseline)
  lab-tile      client -> that CHP -> Jupyter Server /carta/ -> backend
  stock-proxy   client -> that CHP -> Jupyter Server, stock jupyter-server-proxy entry -> backend
  socat         client -> chp -> socat -> backend: what one more TCP hop costs with a byte
                relay written in C and nothing else (Debian package socat)
Each relaying path is compared with a route to the backend on the very CHP process its traffic
passes, so that only the relay differs. Prints MB/s per frame size and direction and the
median round trip, then each figure against its baseline as the median over rounds of its
ratio (round trip: difference) to the baseline's in the same round. `hub-chp` and `lab-chp`
against `chp`, CHPs alone, show how far the machine's noise alone moves a ratio.

Run as root from the repository: /opt/carta-hub/venv/bin/python benchmarks/ws_throughput.py
"""

import argparse
import asyncio
import collections
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path

import requests
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _proc import cpu_seconds, wrapper_pid
from helpers.frames import install_echo_backend
from helpers.hub import CHP, SAME_USER_CARTA, _end, start_hub
from helpers.jupyter import start_jupyter
from helpers.ports import free_port, wait_for
from helpers.users import ensure_user

SIZES = {"64KiB": 64 * 2**10, "1MiB": 2**20, "32MiB": 32 * 2**20}
VOLUME = 256 * 2**20  # bytes per measurement


async def download(ws, size):
    count = max(1, VOLUME // size)
    start = time.perf_counter()
    await ws.send(f"send {size} {count}")
    while await ws.recv() != "sent":
        pass
    return size * count / (time.perf_counter() - start)


async def upload(ws, size):
    count, frame = max(1, VOLUME // size), os.urandom(size)
    start = time.perf_counter()
    for _ in range(count):
        await ws.send(frame)
    await ws.send("stats")
    assert int(await ws.recv()) == size * count
    return size * count / (time.perf_counter() - start)


async def round_trip(ws, n=300):
    times = []
    for _ in range(n):
        start = time.perf_counter()
        await ws.send(b"x" * 16)
        await ws.recv()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


METRICS = ["rtt_ms"] + [f"{d} {name}" for name in SIZES for d in ("down", "up")]


async def measure(metric, url, headers):
    """One figure for one path; a transfer whose connection the path closes counts as 0."""
    async with websockets.connect(
        url, additional_headers=headers, max_size=None, compression=None
    ) as ws:
        if metric == "rtt_ms":
            return await round_trip(ws) * 1000
        direction, name = metric.split()
        transfer = download if direction == "down" else upload
        try:
            return await transfer(ws, SIZES[name]) / 1e6
        except websockets.ConnectionClosed:
            return 0.0


def spawn(cmd, env=None, log=None):
    return subprocess.Popen(
        cmd,
        env={**os.environ, **(env or {})},
        stdout=log or subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )


@contextmanager
def proxy_to(routes):
    """A configurable-http-proxy on a free port with ``routes`` ({prefix: target}), added
    through its API as the Hub adds user routes (so activity tracking is on, as for a Hub);
    yields its URL and a function reading its CPU-seconds."""
    port, api, secret = free_port(), free_port(), secrets.token_hex(8)
    proc = spawn(
        [
            str(CHP),
            "--ip",
            "127.0.0.1",
            "--port",
            str(port),
            "--api-ip",
            "127.0.0.1",
            "--api-port",
            str(api),
        ],
        env={"CONFIGPROXY_AUTH_TOKEN": secret},
    )
    wait_for(lambda: _listening(api), 30, "CHP")
    add_routes(f"http://127.0.0.1:{api}", secret, routes)
    try:
        yield f"ws://127.0.0.1:{port}", partial(cpu_seconds, proc.pid)
    finally:
        _end(proc.pid, proc)


def add_routes(api, secret, routes):
    """Add ``routes`` ({prefix: target}) through the CHP API at ``api``."""
    for prefix, target in routes.items():
        requests.post(
            f"{api}/api/routes{prefix}",
            json={"target": target},
            headers={"Authorization": f"token {secret}"},
        ).raise_for_status()


def cpu_now(hops):
    """CPU-seconds so far of each hop: ``hops`` maps names to functions reading them."""
    return {name: read() for name, read in hops.items()}


def forked_cpu(pid):
    """CPU-seconds of the connection processes a forking server has had, once none is left."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    wait_for(lambda: not children.read_text().strip(), 10, "the relay's connection to end")
    return cpu_seconds(pid, children=True)


@contextmanager
def socat(port):
    """socat relaying a free loopback port to ``port``, 1 MiB per read, as the wrapper reads."""
    relay = free_port()
    proc = spawn(
        [
            "socat",
            "-b",
            str(2**20),
            f"TCP-LISTEN:{relay},bind=127.0.0.1,fork,reuseaddr",
            f"TCP:127.0.0.1:{port},nodelay",
        ]
    )
    wait_for(lambda: _listening(relay), 30, "socat")
    try:
        yield relay, proc.pid
    finally:
        _end(proc.pid, proc)


def _listening(port):
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def echo_backend(workdir):
    port, token = free_port(), secrets.token_hex(16)
    proc = spawn(
        [install_echo_backend(workdir), "--host", "127.0.0.1", "--port", str(port)],
        env={"CARTA_AUTH_TOKEN": token},
    )
    wait_for(lambda: _listening(port), 30, "echo backend")
    try:
        yield port, token
    finally:
        _end(proc.pid, proc)


STOCK = """
c.ServerProxy.servers = {{"stock": {{"command": ["{echo}", "--host", "127.0.0.1", "--port", "{{port}}"],
    "environment": {{"CARTA_AUTH_TOKEN": "{token}"}},
    "request_headers_override": {{"carta-auth-token": "{token}"}}, "timeout": 30}}}}
"""


@contextmanager
def carta_only(workdir, user, echo):
    """A real Hub serving alice's CARTA-only server; yields {path: (url, headers, hops)}
    after login, with the Hub's CHP routing /echo-direct straight to the ``echo`` backend."""
    hubdir = workdir / "hub"
    hubdir.mkdir()
    os.chown(hubdir, user.pw_uid, user.pw_gid)
    config = SAME_USER_CARTA.replace("{workdir}", str(hubdir))
    config += f'\nc.CartaBackend.executable = "{install_echo_backend(workdir)}"\n'
    secret = secrets.token_hex(16)
    hub = start_hub(hubdir, config, user=user.pw_name, env={"CONFIGPROXY_AUTH_TOKEN": secret})
    try:
        hub.start_server("alice")
        add_routes(hub.proxy_api, secret, {"/echo-direct": f"http://127.0.0.1:{echo[0]}"})
        session = hub.login("alice")
        session.get(hub.user_url("alice"))
        cookies = "; ".join(f"{c.name}={c.value}" for c in session.cookies)
        url = hub.user_url("alice").replace("http://", "ws://")
        chp = partial(cpu_seconds, hub.proxy_pid())
        yield {
            "hub-chp": (
                hub.url.replace("http://", "ws://") + "/echo-direct/",
                {"carta-auth-token": echo[1]},
                {"CHP": chp},
            ),
            "carta-only": (
                url,
                {"Cookie": cookies, "Origin": hub.url},
                {"CHP": chp, "relay": partial(cpu_seconds, wrapper_pid("alice"))},
            ),
        }
    finally:
        hub.stop()


@contextmanager
def lab(workdir, user, backend):
    """A Jupyter Server behind CHP with the CARTA tile and a stock proxy entry; yields
    {path: (url, headers, hops)}, with that CHP routing /echo-direct straight to ``backend``
    (the echo backend's port and token)."""
    labdir = workdir / "lab"
    labdir.mkdir()
    os.chown(labdir, user.pw_uid, user.pw_gid)
    echo, token = install_echo_backend(workdir), secrets.token_hex(16)
    (labdir / "jupyter_server_config.py").write_text(STOCK.format(echo=echo, token=token))
    server = start_jupyter(
        labdir,
        "/user/alice/",
        user=user.pw_name,
        args=[f"--CartaBackend.executable={echo}", f"--config={labdir}/jupyter_server_config.py"],
    )
    try:
        routes = {
            "/": f"http://127.0.0.1:{server.port}",
            "/echo-direct": f"http://127.0.0.1:{backend[0]}",
        }
        with proxy_to(routes) as (url, chp):
            auth = {"Authorization": f"token {server.token}"}
            hops = {"CHP": chp, "relay": partial(cpu_seconds, server.proc.pid)}
            yield {
                "lab-chp": (url + "/echo-direct/", {"carta-auth-token": backend[1]}, {"CHP": chp}),
                "lab-tile": (url + "/user/alice/carta/", auth, hops),
                "stock-proxy": (url + "/user/alice/stock/", auth, hops),
            }
    finally:
        server.stop()


# Each relaying path against its own CHP process; those, and the rest, against chp.
BASELINES = {"carta-only": "hub-chp", "lab-tile": "lab-chp", "stock-proxy": "lab-chp"}


def run(paths, rounds):
    user = ensure_user("cartahub-test")
    workdir = Path(tempfile.mkdtemp(prefix="carta-bench-", dir="/tmp"))
    os.chmod(workdir, 0o755)
    os.chown(workdir, user.pw_uid, user.pw_gid)
    with ExitStack() as stack:
        port, token = stack.enter_context(echo_backend(workdir))
        auth = {"carta-auth-token": token}
        routes = {"/": f"http://127.0.0.1:{port}"}
        if "socat" in paths:
            relay, relay_pid = stack.enter_context(socat(port))
            routes["/socat"] = f"http://127.0.0.1:{relay}"
        chp_url, chp = stack.enter_context(proxy_to(routes))
        targets = {
            "direct": (f"ws://127.0.0.1:{port}/", auth, {}),
            "chp": (chp_url + "/", auth, {"CHP": chp}),
        }
        if "socat" in paths:
            targets["socat"] = (
                chp_url + "/socat/",
                auth,
                {"CHP": chp, "relay": partial(forked_cpu, relay_pid)},
            )
        if "carta-only" in paths:
            targets.update(stack.enter_context(carta_only(workdir, user, (port, token))))
        if paths & {"lab-tile", "stock-proxy"}:
            targets.update(stack.enter_context(lab(workdir, user, (port, token))))
        wanted = paths | {"chp"} | {BASELINES[p] for p in paths if p in BASELINES}
        targets = {k: v for k, v in targets.items() if k in wanted}
        samples = {path: {m: [] for m in METRICS} for path in targets}
        cpu = {path: collections.Counter() for path in targets}  # CPU-seconds
        for r in range(rounds):
            # Each figure on every path back to back, in a rotating order: load changes and
            # the order hit every path alike, and each path is paired with its baseline.
            order = list(targets)[r % len(targets) :] + list(targets)[: r % len(targets)]
            for metric in METRICS:
                for path in order:
                    url, headers, hops = targets[path]
                    before = cpu_now(hops)
                    samples[path][metric].append(asyncio.run(measure(metric, url, headers)))
                    if metric != "rtt_ms" and samples[path][metric][-1]:
                        cpu[path].update(cpu_now(hops))
                        cpu[path].subtract(before)
    gb = {
        path: VOLUME / 1e9 * sum(v > 0 for m in METRICS[1:] for v in samples[path][m])
        for path in samples
    }
    return samples, {path: {k: c / gb[path] for k, c in cpu[path].items()} for path in cpu}


def paired(values, base, metric):
    """Median over rounds of each round's figure against its baseline's in the same round."""
    if metric == "rtt_ms":
        return f"{statistics.median(v - b for v, b in zip(values, base)):>+12.3f}"
    return f"{statistics.median(v / b for v, b in zip(values, base)):>12.2f}"


def report(samples, cpu):
    print(f"{'path':<12} " + " ".join(f"{m:>12}" for m in METRICS) + "   (medians)")
    for path, values in samples.items():
        print(f"{path:<12} " + " ".join(f"{statistics.median(values[m]):>12.2f}" for m in METRICS))
    print(
        "\nagainst the path's own CHP alone (hub-chp, lab-chp; those and direct: chp),"
        " paired per round (throughput: ratio, higher is better; rtt: extra ms)"
    )
    for path, values in samples.items():
        base = samples[BASELINES.get(path, "chp")]
        print(f"{path:<12} " + " ".join(paired(values[m], base[m], m) for m in METRICS))
    print(
        "\nCPU-seconds per GB moved (all transfers) of the path's CHP and of what relays"
        " between CHP and the backend"
    )
    print(f"{'path':<12} {'CHP':>8} {'relay':>8}")
    for path, figures in cpu.items():
        if figures:
            print(f"{path:<12} {figures['CHP']:>8.3f} {figures.get('relay', 0):>8.3f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--paths", default="direct,carta-only,lab-tile,stock-proxy,socat")
    parser.add_argument("--rounds", type=int, default=3, help="medians over this many rounds")
    args = parser.parse_args()
    report(*run(set(args.paths.split(",")), args.rounds))


if __name__ == "__main__":
    main()
