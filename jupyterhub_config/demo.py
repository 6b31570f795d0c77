# Local demo: JupyterHub on http://127.0.0.1:8000 serving CARTA to the accounts of this
# machine, started by `make demo` (as root: the Hub starts each user's CARTA as that user).
# Log in with your own account, or as `carta-demo` with the password printed at start: its
# home holds sample-cube.fits to open. The Hub's PATH does not matter: CARTALocalSpawner runs
# carta-hub-singleuser from the Hub's own venv. Other ports: CARTA_HUB_DEMO_PORT (the page),
# CARTA_HUB_DEMO_HUB_PORT and CARTA_HUB_DEMO_API_PORT (the Hub's and the proxy's API).
import os
import pwd
import secrets
import shutil
import subprocess

from carta_hub.hub.samplecube import sample_cube

prefix = os.environ.get("CARTA_HUB_PREFIX", "/opt/carta-hub")
state = os.environ.get("CARTA_HUB_DEMO_DIR", "/var/lib/carta-hub-demo")
os.makedirs(state, mode=0o700, exist_ok=True)
url = f"http://127.0.0.1:{os.environ.get('CARTA_HUB_DEMO_PORT', '8000')}"

c.JupyterHub.bind_url = url
c.JupyterHub.hub_port = int(os.environ.get("CARTA_HUB_DEMO_HUB_PORT", "8081"))
c.ConfigurableHTTPProxy.api_url = (
    f"http://127.0.0.1:{os.environ.get('CARTA_HUB_DEMO_API_PORT', '8001')}"
)
c.JupyterHub.db_url = f"sqlite:///{state}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = f"{state}/cookie_secret"
c.JupyterHub.pid_file = f"{state}/jupyterhub.pid"
c.ConfigurableHTTPProxy.command = [f"{prefix}/node/node_modules/.bin/configurable-http-proxy"]
c.ConfigurableHTTPProxy.pid_file = f"{state}/proxy.pid"

c.JupyterHub.authenticator_class = "pam"
c.Authenticator.allow_all = True  # any account of this machine (the Hub listens on loopback)
c.JupyterHub.spawner_class = "carta-local"  # CARTA-only servers, as each user

carta_backend = shutil.which("carta_backend")
if carta_backend:
    c.CartaBackend.executable = carta_backend
    print(f"carta-hub demo: serving the real CARTA backend {carta_backend}", flush=True)
else:
    c.CartaBackend.executable = f"{prefix}/venv/bin/carta-standin"
    c.CartaBackend.frontend_folder = f"{prefix}/node/node_modules/carta-frontend/build"
    print(
        "carta-hub demo: carta_backend not found, serving the STAND-IN backend "
        "(carta-standin, not CARTA) with the real carta-frontend 6.0.0 from npm",
        flush=True,
    )


def demo_account(name="carta-demo"):
    """A local account with a random password, chosen once and set at every start (so the
    printed one works even if the account's password changed since); returns it."""
    password_file = os.path.join(state, f"{name}.password")
    if subprocess.run(["id", name], capture_output=True).returncode:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True)
    if not os.path.exists(password_file):
        with open(os.open(password_file, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(secrets.token_urlsafe(12))
    with open(password_file) as f:
        password = f.read()
    subprocess.run(["chpasswd"], input=f"{name}:{password}", text=True, check=True)
    return password


def sample_image(name="carta-demo"):
    """A small FITS cube in the account's home, written once (never over what is there)."""
    user = pwd.getpwnam(name)
    path = os.path.join(user.pw_dir, "sample-cube.fits")
    try:  # O_EXCL: not through a link the account may have put there either
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except (FileExistsError, FileNotFoundError):  # there already, or no home
        return
    with open(fd, "wb") as f:
        os.fchown(fd, user.pw_uid, user.pw_gid)
        f.write(sample_cube())


if os.getuid() == 0:
    password = demo_account()
    sample_image()
    print(
        f"carta-hub demo: open {url} and log in as carta-demo "
        f"with password {password} (or with your own account)",
        flush=True,
    )
else:
    print(
        "carta-hub demo: not root, so only your own account can log in and start CARTA", flush=True
    )
