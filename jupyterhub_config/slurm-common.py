# carta-hub on a Slurm login node: each student's CARTA runs as a batch job under their own
# account on a compute node, in an Apptainer container, reading the shared (CephFS) file system.
# Loaded by slurm-pam.py and slurm-ldap.py; see docs/slurm.md (sudo rule, network, image).
c.JupyterHub.spawner_class = "carta-slurm"
c.JupyterHub.bind_url = "http://127.0.0.1:8000"  # behind your TLS proxy
# Each student's CARTA at its own origin, https://NAME.carta.example.org: pages one
# student serves cannot reach another's session. Needs wildcard DNS and TLS (docs/slurm.md).
c.JupyterHub.subdomain_host = "https://carta.example.org"
c.JupyterHub.hub_bind_url = "http://0.0.0.0:8081"  # jobs on compute nodes call the Hub API
c.JupyterHub.hub_connect_url = "http://login1.cluster.example.org:8081"  # this login node
c.JupyterHub.tornado_settings = {"slow_spawn_timeout": 0}  # show queue state at once
c.JupyterHub.cleanup_servers = False  # a Hub restart leaves running jobs alone, re-attaches
c.JupyterHub.db_url = "sqlite:////var/lib/carta-hub/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "/var/lib/carta-hub/cookie_secret"

# The job runs in Apptainer (container_runtime: "singularity", or "none" for bare) from the
# image built from images/carta-hub.def; its log is {home}/.carta-hub-slurm-%j.log (log_path).
c.CARTASlurmSpawner.container_image = "/ceph/images/carta-hub.sif"
c.CARTASlurmSpawner.req_prologue = "module load apptainer"  # shell run before the server

# What students may pick on the spawn page (validated server-side; nothing else is accepted).
c.CARTASlurmSpawner.partitions = ["interactive", "gpu"]
c.CARTASlurmSpawner.cores = [2, 4, 8]
c.CARTASlurmSpawner.memory_gb = [8, 16, 32]
c.CARTASlurmSpawner.gpus = [0, 1]  # --gres=gpu:N and apptainer --nv
c.CARTASlurmSpawner.runtimes = ["2:00:00", "4:00:00", "8:00:00"]
# Also: accounts, qos (e.g. ["astro-teaching"]; empty: no --account/--qos), mode_choices.
c.CARTASlurmSpawner.folder_roots = ["/ceph/home/{login}", "/ceph/data"]

# The same trees as on Kubernetes (carta_hub.hub.storage), bound into the container.
c.CartaStorage.mounts = [
    {"host_path": "/ceph/home/{login}", "mount_path": "/ceph/home/{login}"},
    {"host_path": "/ceph/data", "mount_path": "/ceph/data", "read_only": True},
]
c.CartaBackend.top_level_folder = "/ceph"  # carta_backend is found on the image's PATH

# Defaults worth knowing: start_timeout 900 s (queue waits count), poll_interval 30 s (one
# squeue for all jobs), http_timeout CartaBackend.start_timeout + 10 s.
load_subconfig("culling.py")  # idle sessions end; logout stops CARTA (docs/idle-culling.md)
