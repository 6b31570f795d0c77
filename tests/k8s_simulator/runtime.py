"""Run one simulated container; started by the kubelet as root inside ``unshare --mount``.

Usage: ``python runtime.py SPEC.json`` with SPEC {mounts: [[source, target, read_only]],
uid, gid, groups, env, cwd, argv}. Bind-mounts the volumes, then execs ``argv`` as uid/gid
with only ``env``, no capabilities and no_new_privs. A standalone script: it imports nothing
from the tests.
"""

import json
import os
import subprocess
import sys


def main(spec_file):
    with open(spec_file) as f:
        spec = json.load(f)
    for source, target, read_only in spec["mounts"]:
        os.makedirs(source, exist_ok=True)  # kubelet creates missing subPath directories
        os.makedirs(target, exist_ok=True)
        subprocess.run(["mount", "--bind", source, target], check=True)
        if read_only:
            subprocess.run(["mount", "-o", "remount,bind,ro", target], check=True)
    os.makedirs(spec["cwd"], exist_ok=True)
    groups = ",".join(str(g) for g in spec["groups"])
    argv = [
        "setpriv",
        f"--reuid={spec['uid']}",
        f"--regid={spec['gid']}",
        f"--groups={groups}" if groups else "--clear-groups",
        "--no-new-privs",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--",
        "env",
        "-i",
        "-C",
        spec["cwd"],
        *[f"{k}={v}" for k, v in spec["env"].items()],
        *spec["argv"],
    ]
    os.execvp("setpriv", argv)


if __name__ == "__main__":
    main(sys.argv[1])
