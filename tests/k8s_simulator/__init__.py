"""A small Kubernetes API SIMULATOR for tests (there is no cluster here).

It serves the core/v1 REST and watch calls KubeSpawner makes (pods, events, PVCs, secrets,
services; see :mod:`.api`) and has a "kubelet" (:mod:`.kubelet`) that runs a pod's container
commands locally as the pod's ``runAsUser`` with its env, working dir and volumes, and reports
the pod Running with podIP 127.0.0.1. It is a simulator: no scheduling, images, probes,
restarts, networking or resource limits.

``start_simulator(state_dir, volume_root)`` runs it as a separate process (it must run as root
to switch users and bind-mount volumes) and returns a :class:`Simulator`; clients reach it
through the kubeconfig from :func:`write_kubeconfig`.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import requests
from helpers.ports import await_server, free_port

from .kubeconfig import write_kubeconfig

__all__ = ["Simulator", "start_simulator", "write_kubeconfig"]


class Simulator:
    def __init__(self, proc, url, state_dir):
        self.proc = proc
        self.url = url
        self.state_dir = Path(state_dir)

    def get(self, path):
        return requests.get(self.url + path, timeout=10).json()

    def post(self, path, obj):
        r = requests.post(self.url + path, json=obj, timeout=10)
        r.raise_for_status()
        return r.json()

    def pods(self, namespace="carta"):
        return self.get(f"/api/v1/namespaces/{namespace}/pods")["items"]

    def events(self, namespace="carta"):
        return self.get(f"/api/v1/namespaces/{namespace}/events")["items"]

    def container_log(self, pod, container="notebook", namespace="carta"):
        path = self.state_dir / "pods" / f"{namespace}_{pod}" / f"{container}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self):
        """End the simulator (it kills its pods' processes first)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def start_simulator(state_dir, volume_root, kube_version="1.30.0"):
    port = free_port()
    log = open(Path(state_dir) / "simulator.log", "ab")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "k8s_simulator",
            "--port",
            str(port),
            "--state-dir",
            str(state_dir),
            "--volume-root",
            str(volume_root),
            "--kube-version",
            kube_version,
        ],
        cwd=Path(__file__).parent.parent,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    sim = Simulator(proc, f"http://127.0.0.1:{port}", state_dir)
    return await_server(sim, lambda: _up(sim), 30, "the Kubernetes API simulator")


def _up(sim):
    if sim.proc.poll() is not None:
        raise RuntimeError(f"simulator exited with {sim.proc.returncode}")
    try:
        return requests.get(sim.url + "/version", timeout=2).ok
    except requests.ConnectionError:
        return False
