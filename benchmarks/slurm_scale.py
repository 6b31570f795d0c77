"""Hub scale on Slurm: 200 concurrent jobs of one Hub, 50 of them spawned simultaneously as
CARTA servers; squeue calls per poll interval and the Hub's CPU use in steady state.

A real one-node Slurm claiming 256 CPUs (SlurmdParameters=config_overrides) and a real Hub
on a "login node" (PAM, CHP, CARTASlurmSpawner run bare), one student with named servers:

  1. 50 CARTA servers (carta-hub-singleuser + carta-standin, the spawner's defaults) spawned
     at once through the REST API; each must become ready and answer an ICD
     REGISTER_VIEWER through CHP and its wrapper (the student's browser session).
  2. 150 more servers in three simultaneous batches of 50, each a tiny standard-library
     server that reports its port as batchspawner-singleuser does (tests/helpers/tiny_server.py)
     so that 200 fit in this machine's memory: 200 CARTA wrappers + stand-ins would need
     ~19 GB. The Hub's steady-state work per server (its poll, its share of the one squeue)
     does not depend on what the job runs.
  3. Steady state: --windows windows of --window s. Per window: squeue calls (the counting
     squeue wrapper), CPU seconds (utime+stime from /proc/PID/stat) of this Hub, of its
     reaped children (the squeue and sudo processes) and of its CHP, against a second, idle
     Hub (same config, no servers) started in the same run and measured over the same windows.
  4. All 200 stopped at once.
  5. Baseline: stock batchspawner.SlurmSpawner, whose poll runs one `squeue -j ID` per server
     per poll interval: --stock-servers tiny servers, squeue calls counted over
     --stock-window s at a 2 s poll interval, extrapolated to 200 servers (labelled so).

With --rest both Hubs use the test suite's slurmrestd (c.CARTASlurmSpawner.slurmrestd_url,
JWT) instead of sudo + sbatch/squeue/scancel, and step 3 counts slurmrestd's
``GET /slurm/<version>/jobs`` requests (its -vv log) instead of squeue calls (goal: 1 per
poll interval for all 200 sessions).

Run as root from the repository: /opt/carta-hub/venv/bin/python benchmarks/slurm_scale.py
"""

import argparse
import asyncio
import os
import re
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from _proc import cpu_seconds
from _slurm import (
    STANDIN_NOTE,
    Site,
    dumps,
    hub_log_times,
    spread,
    wait_for,
)
from carta_standin.icd import EventType
from helpers.carta import register
from helpers.client import connect, open_carta
from helpers.tiny_server import TINY

STUDENT = "cb-scale"
CARTA = [f"carta{i:02d}" for i in range(50)]
LIGHT = [f"light{i:03d}" for i in range(150)]
CONFIG = """
c.JupyterHub.allow_named_servers = True
c.JupyterHub.named_server_limit_per_user = 250
c.Spawner.start_timeout = 400
c.Spawner.http_timeout = 120
c.CARTASlurmSpawner.cores = [1]
c.CARTASlurmSpawner.memory_gb = [1]
c.CartaBackend.start_timeout = 300

def light_jobs(spawner):
    # 150 of the 200 jobs run a tiny port-reporting server instead of CARTA (memory)
    if spawner.name.startswith("light"):
        spawner.cmd = ["/usr/bin/python3", {tiny}]
        spawner.batchspawner_singleuser_cmd = ""
        spawner.req_srun = ""

c.Spawner.pre_spawn_hook = light_jobs
"""
STOCK_POLL = 2.0
CALLS = "squeue calls"  # what steady state counts (--rest: slurmrestd's job lists)
STOCK = """
c.JupyterHub.spawner_class = "batchspawner.SlurmSpawner"
c.JupyterHub.allow_named_servers = True
c.Spawner.poll_interval = {poll}
c.Spawner.start_timeout = 120
c.Spawner.env_keep = ["PATH", "LANG", "LC_ALL", "SLURM_CONF"]
c.SlurmSpawner.cmd = ["/usr/bin/python3", {tiny}]
c.SlurmSpawner.batchspawner_singleuser_cmd = ""
c.SlurmSpawner.req_srun = ""
c.SlurmSpawner.req_nprocs = "1"
c.SlurmSpawner.req_memory = "1G"
c.SlurmSpawner.batch_query_cmd = {query}
"""


def servers(hub):
    return hub.api("GET", f"/users/{STUDENT}").json().get("servers", {})


def spawn_all(hub, names, timeout):
    """POST all ``names`` at once; wait until all are ready. Returns seconds to all ready."""
    started = time.time()
    with ThreadPoolExecutor(len(names)) as pool:
        posted = list(
            pool.map(
                lambda name: hub.api("POST", f"/users/{STUDENT}/servers/{name}", json={}), names
            )
        )
    refused = [r.text for r in posted if r.status_code not in (201, 202)]
    if refused:
        raise RuntimeError(f"{len(refused)} spawns refused: {refused[:3]}")

    def all_ready():
        now = servers(hub)
        failed = [n for n in names if n not in now]  # a failed spawn removes the server
        if failed and time.time() - started > 5:
            raise RuntimeError(f"spawns failed: {failed[:5]}...\n{hub.log()[-4000:]}")
        return all(now.get(n, {}).get("ready") for n in names)

    wait_for(all_ready, timeout, f"{len(names)} servers ready", interval=1)
    return time.time() - started


def start_times(hub, names):
    """The Hub's own "took N seconds to start" of each of ``names``."""
    pattern = re.compile(rf"User {re.escape(STUDENT)}:(\S+) took ([\d.]+) seconds to start")
    found = dict(pattern.findall(hub.log()))
    return [float(found[n]) for n in names if n in found]


async def handshakes(hub, login, names):
    ok = 0
    for name in names:
        # a browser tab per server: the Hub's login cookies only (50 servers' cookies in one
        # header would exceed the proxy's header size limit)
        session = requests.Session()
        session.cookies.update(login.cookies)
        await asyncio.to_thread(open_carta, hub, session, STUDENT, f"{name}/")
        async with connect(hub, session, STUDENT, f"{name}/") as ws:
            event, _, _, ack = await register(ws)
            ok += event == EventType.REGISTER_VIEWER_ACK and ack.success
    return ok


class Meter:
    """CPU seconds of a Hub, its reaped children and its CHP."""

    def __init__(self, hub):
        self.pids = {"hub": hub.proc.pid, "proxy": hub.proxy_pid()}

    def read(self):
        return {
            "hub": cpu_seconds(self.pids["hub"]),
            "children": cpu_seconds(self.pids["hub"], children=True),
            "proxy": cpu_seconds(self.pids["proxy"]),
        }


def steady_state(site, busy, idle, windows, window, poll, calls):
    """Per window: ``calls()`` made (squeue runs or slurmrestd job lists) and CPU use."""
    meters = {"busy": Meter(busy), "idle": Meter(idle)}
    rows = []
    for _ in range(windows):
        calls0, t0 = calls(), time.monotonic()
        before = {k: m.read() for k, m in meters.items()}
        time.sleep(window)
        after = {k: m.read() for k, m in meters.items()}
        elapsed = time.monotonic() - t0
        row = {"calls": calls() - calls0, "intervals": elapsed / poll}
        for k in meters:
            for part in before[k]:
                row[f"{k} {part}"] = 100 * (after[k][part] - before[k][part]) / elapsed
        rows.append(row)
        print(
            f"  window: {row['calls']} {CALLS} in {elapsed:.1f} s; Hub CPU "
            f"{row['busy hub']:.2f} % (idle Hub {row['idle hub']:.2f} %)",
            flush=True,
        )
    return rows


def stock_baseline(site, tiny, count, window):
    """Stock SlurmSpawner: squeue calls per poll interval with ``count`` servers."""
    query = f"{site.squeue.path} -h -j {{job_id}} -o '%T %B'"
    hub = site.hub(
        STOCK.format(poll=STOCK_POLL, tiny=dumps(str(tiny)), query=dumps(query)), poll=STOCK_POLL
    )
    names = [f"stock{i}" for i in range(count)]
    hub.api("POST", f"/users/{STUDENT}", json={})
    spawn_all(hub, names, 120)
    time.sleep(STOCK_POLL)  # the spawns' own startup queries are over
    calls0, t0 = site.squeue.calls(), time.monotonic()
    time.sleep(window)
    calls, intervals = site.squeue.calls() - calls0, (time.monotonic() - t0) / STOCK_POLL
    with ThreadPoolExecutor(count) as pool:
        list(pool.map(lambda n: hub.api("DELETE", f"/users/{STUDENT}/servers/{n}"), names))
    wait_for(lambda: not servers(hub), 120, "stock servers stopped", interval=1)
    site.stop_hub(hub)
    return calls / intervals


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--poll",
        type=float,
        default=10.0,
        help="c.Spawner.poll_interval of the Hub under test (default 10 s; "
        "JupyterHub's default is 30 s)",
    )
    parser.add_argument("--windows", type=int, default=6)
    parser.add_argument("--window", type=float, default=20.0, help="seconds per window")
    parser.add_argument("--stock-servers", type=int, default=5)
    parser.add_argument("--stock-window", type=float, default=20.0)
    parser.add_argument(
        "--rest", action="store_true", help="the Hubs use slurmrestd instead of sudo + squeue"
    )
    args = parser.parse_args()
    global CALLS
    CALLS = "slurmrestd GET .../jobs" if args.rest else "squeue calls"

    available = (
        int(re.search(r"MemAvailable:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1)) / 2**20
    )
    if available < 10:
        sys.exit(f"only {available:.1f} GB of memory available; this needs ~9 GB")

    load = os.getloadavg()[0]
    with Site(students=(STUDENT,), cpus=256, sudo_squeue=True, rest=args.rest) as site:
        tiny = site.script("tiny_server.py", TINY)
        config = CONFIG.format(tiny=dumps(str(tiny)))
        busy = site.hub(config, poll=args.poll, rest=args.rest)
        idle = site.hub(config, poll=args.poll, rest=args.rest)
        session = busy.login(STUDENT, site.students[STUDENT])
        busy.api("POST", f"/users/{STUDENT}", json={})

        print(f"{STANDIN_NOTE}\n", flush=True)
        carta_all = spawn_all(busy, CARTA, 450)
        carta_each = start_times(busy, CARTA)
        print(f"50 simultaneous CARTA spawns: all ready after {carta_all:.1f} s", flush=True)
        acks = asyncio.run(handshakes(busy, session, CARTA))
        print(f"REGISTER_VIEWER_ACK through CHP + wrapper: {acks}/50", flush=True)
        light_batches = [spawn_all(busy, LIGHT[i : i + 50], 300) for i in range(0, 150, 50)]
        running = [
            j for j, (s, u) in site.cluster.jobs().items() if u == STUDENT and s == "RUNNING"
        ]
        ready = sum(s.get("ready", False) for s in servers(busy).values())
        print(f"{ready} servers ready, {len(running)} RUNNING Slurm jobs", flush=True)

        time.sleep(2 * args.poll)  # the starts' fast squeue ticks are over
        print(
            f"steady state: {args.windows} windows of {args.window:.0f} s, "
            f"poll_interval {args.poll:.0f} s",
            flush=True,
        )
        calls = site.rest_job_lists if args.rest else site.squeue.calls
        rows = steady_state(site, busy, idle, args.windows, args.window, args.poll, calls)

        stop_started = time.time()
        with ThreadPoolExecutor(50) as pool:
            list(
                pool.map(
                    lambda n: busy.api("DELETE", f"/users/{STUDENT}/servers/{n}"), CARTA + LIGHT
                )
            )
        wait_for(lambda: not servers(busy), 300, "200 servers stopped", interval=1)
        stopped = time.time() - stop_started
        site.wait_idle(120)
        left = len(site.live_jobs())
        stop_times = [
            float(t) for t in re.findall(r"server took ([\d.]+) seconds to stop", busy.log())
        ]
        squeue_failures = len(
            hub_log_times(busy, r"squeue failed|slurmrestd at \S+ is unreachable")
        )
        stock = stock_baseline(site, tiny, args.stock_servers, args.stock_window)

    calls = sum(r["calls"] for r in rows)
    intervals = sum(r["intervals"] for r in rows)
    print(f"\n{STANDIN_NOTE}")
    print("200 concurrent jobs of one Hub: 50 CARTA (wrapper + stand-in), 150 tiny servers\n")
    print(
        f"50 simultaneous CARTA spawns: {len(carta_each)}/50 started, {acks}/50 answered "
        f"REGISTER_VIEWER; all ready {carta_all:.1f} s after the requests; "
        f"per server (Hub's own timing) {spread(carta_each, '{:.1f}')} s"
    )
    print(
        "150 tiny servers in batches of 50: all ready after "
        + ", ".join(f"{t:.1f}" for t in light_batches)
        + " s"
    )
    print(f"concurrent: {ready} servers ready, {len(running)} RUNNING jobs")
    print(
        f"\nsteady state, poll_interval {args.poll:.0f} s, {len(rows)} windows of "
        f"{args.window:.0f} s:"
    )
    print(
        f"  {CALLS}: {calls} in {intervals:.1f} poll intervals = "
        f"{calls / intervals:.2f} per interval (target 1; failures logged: "
        f"{squeue_failures})"
    )
    print(
        f"  stock batchspawner, measured: {stock:.2f} per interval with "
        f"{args.stock_servers} servers -> extrapolated to 200 servers: "
        f"{stock / args.stock_servers * 200:.0f} per interval"
    )
    print("  CPU % of one core, median [min-max] over the windows:")
    print(f"  {'':<24}{'200 jobs':>20}{'idle Hub':>20}")
    for part, label in (
        ("hub", "Hub process"),
        ("children", "Hub's squeue/sudo" if CALLS == "squeue calls" else "Hub's children"),
        ("proxy", "CHP"),
    ):
        print(
            f"  {label:<24}{spread([r[f'busy {part}'] for r in rows]):>20}"
            f"{spread([r[f'idle {part}'] for r in rows]):>20}"
        )
    extra = statistics.median(
        r["busy hub"] + r["busy children"] - r["idle hub"] - r["idle children"] for r in rows
    )
    print(f"  Hub + children over the idle Hub: {extra:.2f} % of one core")
    print(
        f"\nstop all 200 at once: all gone after {stopped:.1f} s "
        f"(per server {spread(stop_times, '{:.1f}')} s); live jobs left: {left}"
    )
    print(
        f"machine load average (1 min): {load:.1f} at the start, {os.getloadavg()[0]:.1f} at "
        f"the end, on {os.cpu_count()} CPUs"
    )
    met = calls <= intervals + 1 and acks == 50 and len(running) >= 200
    print(
        f"targets (one {CALLS.removesuffix(' calls')} per interval, 200 jobs, 50 simultaneous "
        "spawns all succeed): "
        f"{'met' if met else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
