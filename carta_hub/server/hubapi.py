"""A single-user server's side of the Hub: POSTs to the Hub's API with the server's own token,
and JupyterHub's ``internal_ssl`` files (``$JUPYTERHUB_SSL_*``, set by the spawner)."""

import json
import os
import ssl

from tornado import httpclient

SSL_ENV = ("JUPYTERHUB_SSL_KEYFILE", "JUPYTERHUB_SSL_CERTFILE", "JUPYTERHUB_SSL_CLIENT_CA")


class SSLConfigError(ValueError):
    """The ``$JUPYTERHUB_SSL_*`` files are incomplete or unreadable."""


def _ssl_files():
    """(keyfile, certfile, client CA) of internal_ssl, or None without it."""
    files = [os.environ.get(name, "") for name in SSL_ENV]
    if not any(files):
        return None
    if not all(files):
        missing = ", ".join(n for n, f in zip(SSL_ENV, files, strict=True) if not f)
        raise SSLConfigError(
            f"{missing} not set: JupyterHub's internal_ssl needs all of {', '.join(SSL_ENV)} "
            "(the spawner sets them: check its move_certs)"
        )
    return files


def _context(purpose):
    files = _ssl_files()
    if files is None:
        return None
    keyfile, certfile, client_ca = files
    try:
        # the internal CA only (not the system's): as jupyter-server's ssl_options do
        context = ssl.create_default_context(purpose, cafile=client_ca)
        context.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as e:
        raise SSLConfigError(f"Cannot use the internal_ssl files {files}: {e}") from e
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def server_ssl_context() -> ssl.SSLContext | None:
    """TLS for this server under ``internal_ssl``: the Hub-issued certificate, and a client
    certificate signed by the internal CA required of every connection (the Hub, the proxy),
    as jupyterhub-singleuser requires. None without internal_ssl."""
    return _context(ssl.Purpose.CLIENT_AUTH)


def client_ssl_context() -> ssl.SSLContext | None:
    """TLS for calls to the Hub under ``internal_ssl``: this server's certificate as the
    client's, the Hub's verified against the internal CA. None without internal_ssl."""
    return _context(ssl.Purpose.SERVER_AUTH)


async def post(url: str, body: dict) -> None:
    """POST ``body`` as JSON to ``url`` (a Hub API URL); raises on failure."""
    await httpclient.AsyncHTTPClient().fetch(
        url,
        method="POST",
        body=json.dumps(body),
        ssl_options=client_ssl_context(),
        headers={
            "Authorization": f"token {os.environ.get('JUPYTERHUB_API_TOKEN', '')}",
            "Content-Type": "application/json",
        },
    )
