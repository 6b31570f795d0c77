"""carta-hub: serve CARTA through JupyterHub on Kubernetes and Slurm."""

__version__ = "0.1.0"

# Spawners by short path (carta_hub.CARTASlurmSpawner), imported only when asked for, so that
# `import carta_hub` needs neither batchspawner nor kubespawner.
_SPAWNERS = {
    "CARTALocalSpawner": "carta_hub.hub.spawner",
    "CARTASlurmSpawner": "carta_hub.hub.slurm.spawner",
    "CARTAKubeSpawner": "carta_hub.hub.kube",
}


def __getattr__(name):
    if name in _SPAWNERS:
        import importlib

        return getattr(importlib.import_module(_SPAWNERS[name]), name)
    raise AttributeError(f"module 'carta_hub' has no attribute {name!r}")


def _jupyter_server_extension_points():
    return [{"module": "carta_hub.server.jupyterlab"}]
