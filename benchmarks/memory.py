"""Resident memory of the carta-hub wrapper per session (the backend excluded).

A real Hub starts two servers with the stand-in backend (carta-standin, not CARTA): one
CARTA-only (carta-hub-singleuser), one JupyterLab (jupyterhub-singleuser + the CARTA tile).
Each is used (page, ICD handshake, file list) before its wrapper's VmRSS is read. Baseline,
measured in the same run: a bare interpreter of the same venv. Target: CARTA-only <= 60 MB.

Run as root from the repository: /opt/carta-hub/venv/bin/python benchmarks/memory.py
"""

import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _proc import wrapper_pid
from helpers.carta import file_list, register
from helpers.client import connect, open_carta
from helpers.hub import SAME_USER_CARTA, VENV_BIN, start_hub
from helpers.users import ensure_user

TARGET_MB = 60


def rss_mb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


async def use(hub, name, path=""):
    session = hub.login(name)
    open_carta(hub, session, name, path)
    async with connect(hub, session, name, path) as ws:
        await register(ws)
        await file_list(ws)


def main():
    user = ensure_user("cartahub-test")
    workdir = Path(tempfile.mkdtemp(prefix="carta-bench-", dir="/tmp"))
    os.chown(workdir, user.pw_uid, user.pw_gid)
    config = SAME_USER_CARTA.replace("{workdir}", str(workdir))
    hub = start_hub(
        workdir,
        config
        + """
def mode(spawner):
    spawner.carta_mode = "lab" if spawner.user.name == "labuser" else "carta"
c.Spawner.pre_spawn_hook = mode
""",
        user=user.pw_name,
    )
    baseline = subprocess.Popen([str(VENV_BIN / "python"), "-c", "import time; time.sleep(600)"])
    try:
        for name in ("cartauser", "labuser"):
            hub.start_server(name)
        asyncio.run(use(hub, "cartauser"))
        asyncio.run(use(hub, "labuser", "carta/"))
        base = rss_mb(baseline.pid)
        figures = {
            "CARTA-only": rss_mb(wrapper_pid("cartauser")),
            "JupyterLab": rss_mb(wrapper_pid("labuser")),
        }
    finally:
        baseline.kill()
        hub.stop()
    print(f"{'process':<22}{'RSS MB':>9}{'x bare':>9}")
    print(f"{'bare python':<22}{base:>9.1f}{1:>9.2f}")
    for mode_name, mb in figures.items():
        print(f"{'wrapper, ' + mode_name:<22}{mb:>9.1f}{mb / base:>9.2f}")
    verdict = "met" if figures["CARTA-only"] <= TARGET_MB else "MISSED"
    print(f"target: CARTA-only wrapper <= {TARGET_MB} MB: {verdict}")


if __name__ == "__main__":
    main()
