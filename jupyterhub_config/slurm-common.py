# carta-hub on a Slurm login node: each student's CARTA runs as a batch job under their own
# account on a compute node, in an Apptainer container, reading the shared (CephFS) file system.
# Loaded by slurm-pam.py and slurm-ldap.py; see docs/slurm.md (sudo rule, network, image).
# Site values come from the Hub's environment (e.g. its systemd unit).
import os

env = os.environ.get
login_node = env("CARTA_HUB_LOGIN_NODE", "login1.cluster.example.org")

c.JupyterHub.spawner_class = "carta-slurm"
c.JupyterHub.bind_url = env("CARTA_HUB_URL", "http://127.0.0.1:8000")  # behind your TLS proxy
c.JupyterHub.hub_bind_url = "http://0.0.0.0:8081"  # jobs on compute nodes call the Hub API
c.JupyterHub.hub_connect_url = f"http://{login_node}:8081"
c.JupyterHub.cleanup_servers = False  # a Hub restart leaves running jobs alone, re-attaches
c.JupyterHub.db_url = "sqlite:////var/lib/carta-hub/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "/var/lib/carta-hub/cookie_secret"

# The job: Apptainer image holding carta_backend, carta-hub and batchspawner.
c.CARTASlurmSpawner.container_runtime = "apptainer"  # or "singularity", or "none" (bare)
c.CARTASlurmSpawner.container_image = env("CARTA_HUB_IMAGE", "/ceph/software/carta-hub.sif")
c.CARTASlurmSpawner.req_prologue = "module load apptainer"  # shell run before the server
c.CARTASlurmSpawner.log_path = "{home}/.carta-hub-slurm-%j.log"  # tail shown on failure
c.CARTASlurmSpawner.carta_mode = "carta"  # or "lab": JupyterLab with a CARTA tile

# What students may pick on the spawn page (validated server-side; nothing else is accepted).
c.CARTASlurmSpawner.partitions = ["interactive", "gpu"]
c.CARTASlurmSpawner.cores = [2, 4, 8]
c.CARTASlurmSpawner.memory_gb = [8, 16, 32]
c.CARTASlurmSpawner.gpus = [0, 1]  # --gres=gpu:N and apptainer --nv
c.CARTASlurmSpawner.runtimes = ["2:00:00", "4:00:00", "8:00:00"]
c.CARTASlurmSpawner.accounts = []  # e.g. ["astro-teaching"]; empty: no --account
c.CARTASlurmSpawner.qos = []
c.CARTASlurmSpawner.folder_roots = ["/ceph/home/{login}", "/ceph/data"]

# The same trees as on Kubernetes (carta_hub.storage), bound into the container.
c.CartaStorage.mounts = [
    {"host_path": "/ceph/home/{login}", "mount_path": "/ceph/home/{login}"},
    {"host_path": "/ceph/data", "mount_path": "/ceph/data", "read_only": True},
]
c.CartaBackend.top_level_folder = "/ceph"
c.CartaBackend.executable = "/usr/bin/carta_backend"  # inside the image

# Queue waits count against the start timeout; squeue runs once per poll_interval for all jobs.
c.Spawner.start_timeout = 900
c.Spawner.http_timeout = 120
c.Spawner.poll_interval = 30
