"""The Hub's side of carta-hub: spawners, user identity, storage, `carta-hub check`.

Imported by JupyterHub. Depends on :mod:`carta_hub.backend` (the shared backend settings),
never on :mod:`carta_hub.server`.
"""
