"""carta-hub: serve CARTA through JupyterHub on Kubernetes and Slurm."""

__version__ = "0.1.0"


def _jupyter_server_extension_points():
    return [{"module": "carta_hub.lab"}]
