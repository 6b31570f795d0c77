"""Real unix users for tests (created with useradd, removed with userdel)."""

import pwd
import subprocess


def ensure_user(name, uid=None, password=None, home_mode="0750"):
    """Create ``name`` (with a home) unless it exists; return its pwd entry."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        cmd = ["useradd", "--create-home", "--shell", "/bin/bash", "--user-group"]
        if uid is not None:
            cmd += ["--uid", str(uid)]
        subprocess.run(cmd + [name], check=True)
        entry = pwd.getpwnam(name)
    subprocess.run(["chmod", home_mode, entry.pw_dir], check=True)
    if password:
        subprocess.run(["chpasswd"], input=f"{name}:{password}", text=True, check=True)
    return entry


def remove_user(name):
    subprocess.run(["userdel", "--remove", name], capture_output=True)
