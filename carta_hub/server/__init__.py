"""The user's server: the CARTA-only single-user app, the JupyterLab extension and launcher
tile, the proxy to ``carta_backend``, its supervision and the activity reported to the Hub.

Runs as the user, on the node or in the pod. Depends on :mod:`carta_hub.backend` (the shared
backend settings), never on :mod:`carta_hub.hub`.
"""
