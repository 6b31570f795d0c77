"""What the benchmarks read from /proc: CPU time and the server processes of a Hub."""

import os
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid, children=False):
    """User + system CPU seconds of ``pid``, all its threads (``children``: of its waited-for
    children)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    first = 13 if children else 11  # utime stime cutime cstime are fields 14-17
    return (int(fields[first]) + int(fields[first + 1])) / TICK


def wrapper_pid(name):
    """The single-user server process whose environment says it serves Hub user ``name``."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if f"JUPYTERHUB_USER={name}".encode() in env and b"singleuser" in cmd:
            return int(pid)
    raise RuntimeError(f"no server process for {name}")
