import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers.hub import start_hub  # noqa: E402
# The Slurm cluster and its accounts: session fixtures defined once here, so that exactly one
# teardown stops the cluster, after every fixture that uses it.
from helpers.slurm import hub_account, slurm, students  # noqa: E402, F401
from helpers.users import ensure_user  # noqa: E402

HUB_USER = "cartahub-test"


@pytest.fixture(scope="session")
def hub_unix_user():
    """The unprivileged unix user the test Hubs (and their local servers) run as."""
    return ensure_user(HUB_USER)


@pytest.fixture(scope="session")
def artifacts():
    """Where tests leave screenshots and logs for people to look at."""
    path = Path(os.environ.get("CARTA_HUB_ARTIFACTS", Path(__file__).parent.parent / "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def open_tmp(hub_unix_user):
    """A temporary folder outside /tmp/pytest-of-root (mode 700), owned by the test Hub's
    user and readable by other test users."""
    path = Path(tempfile.mkdtemp(prefix="carta-hub-", dir="/tmp"))
    os.chmod(path, 0o755)
    os.chown(path, hub_unix_user.pw_uid, hub_unix_user.pw_gid)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def hub_factory(hub_unix_user):
    """``hub_factory(config)``: a real Hub + CHP run as the unprivileged test user."""
    hubs, dirs = [], []

    def make(config="", **kwargs):
        workdir = Path(tempfile.mkdtemp(prefix="carta-hub-test-", dir="/tmp"))
        dirs.append(workdir)
        os.chown(workdir, hub_unix_user.pw_uid, hub_unix_user.pw_gid)
        config = config.replace("{workdir}", str(workdir))
        env = {k: v.replace("{workdir}", str(workdir)) for k, v in kwargs.pop("env", {}).items()}
        hub = start_hub(workdir, config, user=kwargs.pop("user", HUB_USER), env=env, **kwargs)
        hubs.append(hub)
        return hub

    yield make
    for hub in hubs:
        hub.stop()
    for d in dirs if not os.environ.get("KEEP_HUB_DIRS") else []:
        shutil.rmtree(d, ignore_errors=True)
