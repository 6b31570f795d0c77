"""The backend on a real node, started by the wrapper (carta_hub.server.backend_process.BackendProcess) with
the stand-in ``carta-standin`` (NOT CARTA): the node's /etc/carta/backend.json, the CPUs the
session was given, a home where ~/.carta cannot be written."""

import json
import logging
import os
import re
from pathlib import Path

import pytest
import requests
from helpers.standin import FRONTEND, STANDIN

from carta_hub.backend import CartaBackend
from carta_hub.server.backend_process import BackendProcess

# carta-standin with its own view of /etc: an overlay holding carta/backend.json, in a mount
# namespace of its own (an unprivileged user namespace: no root needed, the host's /etc stays)
WITH_SITE_ETC = """#!/bin/sh
exec unshare --user --map-current-user --keep-caps --mount -- sh -c \\
    'mount -t overlay overlay -o "lowerdir=/etc,upperdir=$0/upper,workdir=$0/work" /etc &&
     exec "$@"' {folder} {standin} "$@"
"""


@pytest.fixture
def home(tmp_path, monkeypatch):
    folder = tmp_path / "home"
    (folder / "observations").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(folder))
    return folder


def wrapper(**settings):
    settings = {"executable": STANDIN, "frontend_folder": FRONTEND, "start_timeout": 30, **settings}
    return BackendProcess(CartaBackend(**settings), logging.getLogger("test-backend-node"))


def get(port, token, path):
    return requests.get(
        f"http://127.0.0.1:{port}{path}", headers={"carta-auth-token": token}, timeout=5
    )


def site_etc(folder, settings):
    """An executable that runs carta-standin where /etc/carta/backend.json holds ``settings``."""
    (folder / "upper" / "carta").mkdir(parents=True)
    (folder / "work").mkdir()
    (folder / "upper" / "carta" / "backend.json").write_text(json.dumps(settings))
    script = folder / "carta-standin-site"
    script.write_text(WITH_SITE_ETC.format(folder=folder, standin=STANDIN))
    script.chmod(0o755)
    return script


async def test_node_system_config_is_ignored(tmp_path, home):
    """A node's /etc/carta/backend.json (CARTA installed by the site for its own use) must not
    move CARTA under another URL prefix, switch its frontend off, or change the folder the
    student starts in."""
    elsewhere = home / "elsewhere"
    elsewhere.mkdir()
    executable = site_etc(
        tmp_path / "site",
        {"http_url_prefix": "site", "no_frontend": True, "starting_folder": str(elsewhere)},
    )
    backend = wrapper(
        executable=str(executable), top_level_folder="{home}", starting_folder="{home}/observations"
    )
    try:
        port, token = await backend.ensure_running()
        page = get(port, token, "/")
        assert page.status_code == 200 and "<title>CARTA</title>" in page.text
        assert get(port, token, "/config").json()["apiAddress"] == "/api"
        listening = next(line for line in backend.tail if "Listening on port" in line)
        assert re.search(
            rf"starting folder {re.escape(str(home / 'observations'))}[,.]", listening
        ), listening
    finally:
        await backend.stop()


def backend_argv(backend):
    return Path(f"/proc/{backend.proc.pid}/cmdline").read_text().split("\0")[:-1]


def threads_flag(argv):
    return argv[argv.index("--omp_threads") + 1] if "--omp_threads" in argv else None


@pytest.fixture
def one_cpu():
    """This process (so the server under test) may run on one CPU only, as a cpuset or
    taskset leaves it."""
    cpus = os.sched_getaffinity(0)
    if len(cpus) < 2:
        pytest.skip("needs a machine with 2 CPUs or more")
    os.sched_setaffinity(0, {min(cpus)})
    yield
    os.sched_setaffinity(0, cpus)


@pytest.mark.parametrize(
    "environ, setting, threads",
    [
        # KubeSpawner's pod: JupyterHub's Spawner.get_env sets CPU_LIMIT and CPU_GUARANTEE
        ({"CPU_LIMIT": "0.5", "CPU_GUARANTEE": "0.1"}, 0, "1"),
        ({"CPU_GUARANTEE": "0.5"}, 0, "1"),
        # a Slurm job's server: the job's CPUs win over a CPU_LIMIT
        ({"SLURM_CPUS_PER_TASK": "1", "SLURM_CPUS_ON_NODE": "2", "CPU_LIMIT": "2"}, 0, "1"),
        ({"SLURM_CPUS_ON_NODE": "1"}, 0, "1"),
        # the operator's own number, and the backend's default (every CPU of the node)
        ({"CPU_LIMIT": "0.5"}, 2, "2"),
        ({"CPU_LIMIT": "0.5"}, -1, None),
    ],
)
async def test_backend_threads_follow_the_session_cpus(
    home, monkeypatch, environ, setting, threads
):
    """carta_backend starts one OpenMP thread per CPU of the node unless told otherwise: a
    session given one CPU of a large node would run dozens of threads on it."""
    for name in ("SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE", "CPU_LIMIT", "CPU_GUARANTEE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    backend = wrapper(omp_threads=setting)
    try:
        await backend.ensure_running()
        argv = backend_argv(backend)
        assert threads_flag(argv) == threads, argv
        if threads:
            assert any(f"and {threads} OpenMP worker threads" in line for line in backend.tail)
    finally:
        await backend.stop()


async def test_local_backend_threads_follow_the_cpus_it_may_use(home, monkeypatch, one_cpu):
    for name in ("SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE", "CPU_LIMIT", "CPU_GUARANTEE"):
        monkeypatch.delenv(name, raising=False)
    backend = wrapper()
    try:
        await backend.ensure_running()
        assert threads_flag(backend_argv(backend)) == "1"
    finally:
        await backend.stop()
