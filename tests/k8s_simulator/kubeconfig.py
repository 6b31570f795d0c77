"""A kubeconfig that points kubernetes clients (KubeSpawner's) at the simulator."""

import yaml


def write_kubeconfig(path, server):
    """Write a kubeconfig for the API at ``server`` (e.g. http://127.0.0.1:PORT) to ``path``."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "simulator", "cluster": {"server": server}}],
        "users": [{"name": "hub", "user": {"token": "simulator-token"}}],
        "contexts": [
            {
                "name": "simulator",
                "context": {"cluster": "simulator", "user": "hub", "namespace": "carta"},
            }
        ],
        "current-context": "simulator",
    }
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
    return path
