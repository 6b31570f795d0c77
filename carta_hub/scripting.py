"""For a notebook: what carta-python needs to script the student's own open CARTA.

    from carta.session import Session
    from carta.token import BackendToken
    from carta_hub.scripting import carta_session

    url, session_id, token = carta_session()
    session = Session.interact(url, session_id, BackendToken(token))

In a notebook of a JupyterHub server, :func:`carta_session` asks that server (``GET
<server>/carta-hub/sessions``, with $JUPYTERHUB_API_TOKEN) for CARTA's URL and the id of the
CARTA tab open there. The token it returns is the student's JupyterHub token: carta-hub's
proxy checks it and sends the backend its own. Only the standard library is used, so that
any kernel with carta-hub installed can run it.
"""

import json
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from urllib.parse import urljoin, urlsplit

SESSIONS = "carta-hub/sessions"
#: hosts a server listening on every interface shows in $JUPYTERHUB_SERVICE_URL
ANY_HOST = ("", "0.0.0.0", "::")


class CartaScriptingError(RuntimeError):
    """CARTA cannot be scripted now; ``str()`` says why and what to do."""


def own_server(environ: Mapping[str, str] = os.environ) -> str:
    """This notebook's server as its kernel reaches it: $JUPYTERHUB_SERVICE_URL (where the
    server listens, on this machine), on loopback when it listens on every interface."""
    url = environ.get("JUPYTERHUB_SERVICE_URL", "")
    if not url:
        raise CartaScriptingError(
            "This is not a notebook of a JupyterHub server ($JUPYTERHUB_SERVICE_URL is not "
            "set): pass server_url= (your server's URL, e.g. https://HUB/user/NAME/) and "
            "token= (a token from the Hub's token page, HUB/hub/token)."
        )
    parts = urlsplit(url)
    if (parts.hostname or "") in ANY_HOST:
        parts = parts._replace(netloc=f"127.0.0.1:{parts.port}")
    return parts.geturl()


def _get_sessions(server_url: str, token: str, timeout: float) -> dict:
    url = urljoin(server_url.rstrip("/") + "/", SESSIONS)
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.load(response)
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            raise CartaScriptingError(
                f"{server_url} refused this token ({e.code}): use the token of a notebook of "
                "that server ($JUPYTERHUB_API_TOKEN) or one from the Hub's token page "
                "(HUB/hub/token), as the server's owner."
            ) from None
        raise CartaScriptingError(
            f"{url} answered {e.code}: is this a carta-hub server with CARTA?"
        ) from None
    except (OSError, ValueError) as e:
        raise CartaScriptingError(f"Could not ask {url} for CARTA's sessions: {e}") from None


def carta_session(
    server_url: str | None = None,
    token: str | None = None,
    session_id: int | None = None,
    timeout: float = 10,
) -> tuple[str, int, str]:
    """``(url, session_id, token)`` for carta-python's ``Session.interact(url, session_id,
    BackendToken(token))``: CARTA's URL on the server, the id of the CARTA tab opened last
    (or ``session_id`` if it is open), and the JupyterHub token to send.

    ``server_url``: the user's server (default: this notebook's own, :func:`own_server`);
    ``token``: a JupyterHub token of its owner (default: $JUPYTERHUB_API_TOKEN). Raises
    :class:`CartaScriptingError` when scripting is off, no CARTA tab is open there, or the
    server refuses the token.
    """
    server_url = server_url or own_server()
    token = token or os.environ.get("JUPYTERHUB_API_TOKEN", "")
    if not token:
        raise CartaScriptingError(
            "No token: $JUPYTERHUB_API_TOKEN is not set; pass token= (a token from the "
            "Hub's token page, HUB/hub/token)."
        )
    answer = _get_sessions(server_url, token, timeout)
    if not answer.get("scripting"):
        raise CartaScriptingError(answer.get("message") or "Scripting is off on this Hub.")
    ids = [s["session_id"] for s in answer.get("sessions", [])]
    if session_id is not None and session_id not in ids:
        raise CartaScriptingError(f"CARTA session {session_id} is not open (open: {ids}).")
    if not ids:
        raise CartaScriptingError(
            "No CARTA tab is open on this server: open CARTA in your browser, then run this "
            f"again. {answer.get('message', '')}".strip()
        )
    url = urljoin(server_url, answer["carta_url"])
    return url, ids[-1] if session_id is None else session_id, token
