"""``carta-hub-singleuser``'s entry point: the CARTA-only server without the Hub's database model.

``jupyterhub.services.auth`` (the Hub OAuth client this server uses) imports
``jupyterhub.scopes``, which imports ``jupyterhub.orm`` and ``jupyterhub.roles`` for the Hub's
own use; the server never touches them. They are loaded lazily here (on first use, should
anything ever use them), which saves ~17 MB per session (benchmarks/memory.py).
"""

import importlib.util
import sys
from importlib.machinery import ModuleSpec

HUB_ONLY = frozenset({"jupyterhub.orm", "jupyterhub.roles"})


class HubOnlyFinder:
    """Finds the HUB_ONLY modules as the next finders do, with a lazy loader."""

    def find_spec(self, name: str, path, target=None) -> ModuleSpec | None:
        if name not in HUB_ONLY:
            return None
        for finder in sys.meta_path[sys.meta_path.index(self) + 1 :]:
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                spec.loader = importlib.util.LazyLoader(spec.loader)
                return spec
        return None


def main() -> None:
    if not any(isinstance(f, HubOnlyFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, HubOnlyFinder())
    from carta_hub.server.app import main as serve

    return serve()
