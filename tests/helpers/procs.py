"""What /proc and ss show of the processes the tests start: listening sockets, environments,
command lines, and the stand-in backends and servers of a home or a Hub user."""

import os
import re
import subprocess
from pathlib import Path


def listening():
    """``[(address, port, pid, uid, command)]`` of every listening TCP socket."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        for command, pid in re.findall(r'\("([^"]+)",pid=(\d+)', line):
            address, port = line.split()[3].rsplit(":", 1)
            try:
                uid = os.stat(f"/proc/{pid}").st_uid
            except OSError:
                continue
            found.append((address.strip("[]"), int(port), int(pid), uid, command))
    return found


def environ(pid):
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(v.split(b"=", 1) for v in raw.split(b"\0") if b"=" in v)


def cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def backend_sockets():
    """(address, port, pid) of every listening TCP socket of a carta-standin process."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        if '"carta-standin"' in line:
            address, port = line.split()[3].rsplit(":", 1)
            found.append((address, int(port), int(re.search(r"pid=(\d+)", line).group(1))))
    return found


def processes(home, program):
    """PIDs of ``program`` processes whose HOME is ``home`` (this Hub's user only)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if (
            state != "Z"
            and f"HOME={home}".encode() in environ
            and any(arg.endswith(program.encode()) for arg in argv[:2])
        ):
            found.append(int(pid))
    return found


def every_process():
    """``(pid, argv, environ, uid)`` of every process still there while read."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            uid = os.stat(f"/proc/{pid}").st_uid
        except OSError:
            continue
        yield int(pid), argv, dict(v.split(b"=", 1) for v in raw if b"=" in v), uid


def runs(argv, program):
    """Whether ``argv`` is ``program``'s (as a script: the interpreter comes first)."""
    return any(arg.endswith(program.encode()) for arg in argv[:2])


def user_processes(name, program="carta-standin"):
    """``[(uid, environ)]`` of the ``program`` processes started for Hub user ``name``."""
    return [
        (uid, env)
        for _, argv, env, uid in every_process()
        if env.get(b"JUPYTERHUB_USER") == name.encode() and runs(argv, f"/{program}")
    ]


def carta_uids(name):
    return [uid for uid, _ in user_processes(name)]
